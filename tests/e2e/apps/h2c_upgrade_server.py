"""An HTTP/2 server reached by `Upgrade: h2c` from HTTP/1.1 (RFC 7540 §3.2), built
on the `h2` library: reads the HTTP/1.1 request, answers `101 Switching Protocols`,
then serves that request as stream 1 and every later request as HTTP/2 streams.

Each response is 200 with body "ok <path>" and echoes the request's X-Request-ID.
A connection that does not ask for h2c gets a plain HTTP/1.1 400.

Usage: h2c_upgrade_server.py PORT   (prints "ready" once it listens)
"""

from __future__ import annotations

import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def respond(conn: h2.connection.H2Connection, stream_id: int, headers: dict[str, str]):
    body = f"ok {headers.get(':path', '?')}".encode()
    out = [(":status", "200"), ("content-length", str(len(body))), ("content-type", "text/plain")]
    if "x-request-id" in headers:
        out.append(("x-request-id", headers["x-request-id"]))
    conn.send_headers(stream_id, out)
    conn.send_data(stream_id, body, end_stream=True)


def read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def serve(sock: socket.socket):
    with sock:
        got = read_head(sock)
        if got is None:
            return
        head, rest = got
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("upgrade", "").lower() != "h2c" or "http2-settings" not in fields:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        # The switch, then the server's preface: two writes, as most servers do.
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_upgrade_connection(fields["http2-settings"].encode())
        sock.sendall(conn.data_to_send())
        upgraded = {":method": method, ":path": path}
        if "x-request-id" in fields:
            upgraded["x-request-id"] = fields["x-request-id"]
        respond(conn, 1, upgraded)
        sock.sendall(conn.data_to_send())
        data = rest
        while True:
            if data:
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {k.decode() if isinstance(k, bytes) else k:
                                   v.decode() if isinstance(v, bytes) else v
                                   for k, v in event.headers}
                        respond(conn, event.stream_id, headers)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
            data = sock.recv(65536)
            if not data:
                return


def main():
    port = int(sys.argv[1])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    print("ready", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
