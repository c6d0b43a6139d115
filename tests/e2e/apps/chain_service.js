// An event-loop service for the autotracing topologies (Node.js stdlib `http`): for
// every request it calls each downstream service in turn with the same path, over a
// keep-alive agent, and answers 200 once they all answered. Many requests are in
// flight on its one thread at a time.
//
//   node chain_service.js PORT [--call HOST:PORT ...] [--forward-request-id]
//
// Prints `ready <pid>` once listening; exits on SIGTERM.
'use strict';
const http = require('http');

const args = process.argv.slice(2);
const port = Number(args[0]);
const calls = [];
let forwardRequestId = false;
for (let i = 1; i < args.length; i++) {
  if (args[i] === '--call') calls.push(args[++i]);
  else if (args[i] === '--forward-request-id') forwardRequestId = true;
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function call(target, path, headers) {
  const [host, p] = target.split(':');
  return new Promise((resolve) => {
    const req = http.get({ host, port: Number(p), path, headers, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(502));
  });
}

const server = http.createServer(async (req, res) => {
  let status = 200;
  if (req.url !== '/') {
    for (const target of calls) {
      const headers = {};
      const rid = req.headers['x-request-id'];
      if (forwardRequestId && rid) headers['X-Request-ID'] = rid;
      const got = await call(target, req.url, headers);
      if (got !== 200) status = 502;
    }
  }
  const body = `node ${req.url}\n`;
  res.writeHead(status, { 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.log(`ready ${process.pid}`));
process.on('SIGTERM', () => {
  agent.destroy();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
