//! The stitcher's state: spans in flight, the indexes each rule looks up, the
//! components (traces in the making) and the decisions, kept apart from the async
//! processor so it can be driven with explicit times in tests and benchmarks.
//!
//! A span waits `window` after it arrives ("settles"); then its parent is chosen by
//! the tiers in order (T0 TCP sequence, T1 SDK context, T2 syscall id, T3 request
//! id). A tier accepts an edge only when exactly one candidate qualifies and no veto
//! applies; otherwise the next tier is tried. A component leaves when every member
//! has settled and `grace` has passed (or `max_hold` after its first span). Emitted
//! spans stay known for `max_hold`, so a late child joins its trace and a late parent gets a
//! link to the child it can no longer adopt.

use std::collections::VecDeque;

use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::config::{AutotracingConfig, SdkMerge};
use super::facts::{
    self, same_trace, Facts, ProcKey, ResourceFacts, RidKeys, Role, TraceKey, EBPF_SCOPE,
};
use super::stats::{Stats, Tier, Veto};

/// Every map here is hit several times per span: a fast hasher, randomly seeded
/// per process so keys from the network cannot be chosen to collide.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

type NodeId = u64;
type CompId = u64;

/// The resource and scope a span arrived under, shared by its siblings.
pub struct Origin {
    pub resource: Option<Resource>,
    pub resource_schema: String,
    pub scope: Option<InstrumentationScope>,
    pub scope_schema: String,
}

struct Held {
    span: Span,
    origin: Arc<Origin>,
}

struct Node {
    f: Facts,
    /// The span itself until it leaves (boxed: emitted nodes stay known, small).
    held: Option<Box<Held>>,
    arrival: Instant,
    settled: bool,
    comp: CompId,
    parent: Option<(NodeId, Tier)>,
    /// The parent's span id as known when the edge was made (the parent may be
    /// forgotten before this span leaves).
    parent_span: u64,
    /// The trace context a header named when no parent span is known (T1).
    claimed: Option<(TraceKey, u64)>,
    /// sdk_merge=merge: this eBPF span is dropped; its relatives use this node.
    merged_into: Option<NodeId>,
    /// sdk_merge=merge on the server side: the eBPF server span this SDK span absorbed.
    absorbed: Option<NodeId>,
    children: usize,
    t0_child: bool,
    links: Vec<Link>,
    /// Set once emitted: the trace id and the span id relatives must point to.
    emitted: Option<(TraceKey, u64)>,
}

struct Comp {
    members: Vec<NodeId>,
    unsettled: usize,
    first_arrival: Instant,
    /// Trace id an SDK span or a captured header gave (the fullest seen).
    hint: Option<TraceKey>,
    /// Trace id already used for emitted members or relatives: final.
    fixed: Option<TraceKey>,
    emitted_any: bool,
    /// Members already sent on (max_hold), still counted against max_spans_per_trace.
    emitted: usize,
    /// When every member had settled (the grace period runs from here).
    ready_since: Option<Instant>,
}

impl Comp {
    fn ident(&self) -> Option<TraceKey> {
        self.fixed.or(self.hint)
    }
}

/// Merges two trace-id hints of the same trace, keeping the 128-bit form.
fn fuller(a: Option<TraceKey>, b: Option<TraceKey>) -> Option<TraceKey> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if x >> 64 == 0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Spans by id. Ids are handed out in arrival order and spans are forgotten in
/// about that order, so a deque offset by the oldest live id holds them: O(1)
/// lookups, no rehashing of large entries, holes only between out-of-order removals.
#[derive(Default)]
struct Slab {
    base: NodeId,
    items: VecDeque<Option<Node>>,
    live: usize,
}

impl Slab {
    fn slot(&self, id: NodeId) -> Option<usize> {
        id.checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.items.len())
    }

    fn get(&self, id: &NodeId) -> Option<&Node> {
        self.slot(*id).and_then(|i| self.items[i].as_ref())
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Node> {
        self.slot(*id).and_then(|i| self.items[i].as_mut())
    }

    fn contains_key(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// Adds the span with the next id.
    fn insert(&mut self, id: NodeId, node: Node) {
        if self.items.is_empty() {
            self.base = id;
        }
        debug_assert_eq!(id, self.base + self.items.len() as u64);
        self.items.push_back(Some(node));
        self.live += 1;
    }

    fn remove(&mut self, id: &NodeId) -> Option<Node> {
        let i = self.slot(*id)?;
        let n = self.items[i].take();
        if n.is_some() {
            self.live -= 1;
        }
        while matches!(self.items.front(), Some(None)) {
            self.items.pop_front();
            self.base += 1;
        }
        n
    }

    fn len(&self) -> usize {
        self.live
    }
}

/// Most keys (a sequence number, a span id, a request id) name one or two spans.
type Key<T> = HashMap<T, SmallVec<[NodeId; 2]>>;
/// Spans one request id may name before the id counts as naming none.
const HOT_KEY: usize = 16;
/// How long (in span time) a thread seen serving two requests at once stays an
/// event loop for T2.
const MULTIPLEXED_TTL_NS: u64 = 600_000_000_000;
/// A thread's or a process's server spans: long lists, newest at the back.
type Queue<T> = HashMap<T, VecDeque<NodeId>>;

/// The id lists of the indexes.
trait IdList: Default {
    fn push_id(&mut self, id: NodeId);
    /// Drops ids of forgotten spans from the front; true when nothing is left.
    fn prune(&mut self, nodes: &Slab) -> bool;
}

impl IdList for SmallVec<[NodeId; 2]> {
    fn push_id(&mut self, id: NodeId) {
        self.push(id);
    }
    fn prune(&mut self, nodes: &Slab) -> bool {
        self.retain(|x| nodes.contains_key(x));
        self.is_empty()
    }
}

impl IdList for VecDeque<NodeId> {
    fn push_id(&mut self, id: NodeId) {
        self.push_back(id);
    }
    fn prune(&mut self, nodes: &Slab) -> bool {
        while self.front().is_some_and(|f| !nodes.contains_key(f)) {
            self.pop_front();
        }
        self.is_empty()
    }
}

#[derive(Default)]
struct Indexes {
    span_id: Key<u64>,
    req_seq: Key<u32>,
    header_span: Key<u64>,
    sdk_trace: HashMap<u64, NodeId>,
    servers_by_sys: Key<(ProcKey, u64)>,
    clients_by_sys_req: Key<(ProcKey, u64)>,
    clients_by_sys_resp: Key<(ProcKey, u64)>,
    servers_by_rid: Key<(ProcKey, Box<str>)>,
    clients_by_rid: Key<(ProcKey, Box<str>)>,
    /// By (pid, tid): SDK spans may not name their host; hosts are compared after.
    servers_by_thread: Queue<(u32, u32)>,
    servers_by_proc: Queue<ProcKey>,
}

/// The request ids a server span is found by: received and answered, once each.
fn rid_keys(f: &Facts) -> impl Iterator<Item = &Box<str>> {
    let resp = f
        .rid_resp
        .as_ref()
        .filter(|r| Some(*r) != f.rid_req.as_ref());
    f.rid_req.iter().chain(resp)
}

fn add<K: std::hash::Hash + Eq, L: IdList>(m: &mut HashMap<K, L>, k: K, id: NodeId) {
    m.entry(k).or_default().push_id(id);
}

/// Forgets ids of spans no longer known. A long list keeps an id forgotten out of
/// order until the front reaches it (lookups skip ids of unknown spans).
fn remove<K: std::hash::Hash + Eq, L: IdList>(m: &mut HashMap<K, L>, k: &K, nodes: &Slab) {
    if m.get_mut(k).is_some_and(|v| v.prune(nodes)) {
        m.remove(k);
    }
}

fn get<'a, K: std::hash::Hash + Eq>(
    m: &'a Key<K>,
    k: &K,
) -> impl DoubleEndedIterator<Item = NodeId> + 'a {
    m.get(k).into_iter().flat_map(|v| v.iter().copied())
}

fn getq<'a, K: std::hash::Hash + Eq>(
    m: &'a Queue<K>,
    k: &K,
) -> impl DoubleEndedIterator<Item = NodeId> + 'a {
    m.get(k).into_iter().flat_map(|v| v.iter().copied())
}

/// What the tiers decided for one span.
enum Decision {
    Parent(NodeId, Tier),
    /// eBPF span merged into the SDK span of the same call (sdk_merge=merge).
    MergeInto(NodeId),
    /// No known parent span, but a header named one.
    Claimed(TraceKey, u64),
    None,
}

pub struct Stitcher {
    cfg: AutotracingConfig,
    rid_keys: RidKeys,
    tol: u64,
    mtt: u64,
    window_ns: u64,
    nodes: Slab,
    next_node: NodeId,
    comps: HashMap<CompId, Comp>,
    next_comp: CompId,
    ix: Indexes,
    settle_queue: VecDeque<NodeId>,
    hold_queue: VecDeque<(Instant, CompId)>,
    ready_queue: VecDeque<(Instant, CompId)>,
    /// Threads seen serving overlapping requests, with the span time last seen.
    multiplexed: HashMap<(ProcKey, u32), u64>,
    expiry: VecDeque<(Instant, NodeId)>,
    held_spans: usize,
    stats: Arc<Stats>,
    out: Vec<(Arc<Origin>, Span)>,
    /// Where the rule of each edge is told to the status page, if one runs.
    status: Option<Arc<weft_pipeline::status::StatusHub>>,
    /// Emitted spans whose parent a rule chose, by rule, since the start (what
    /// weft's own flush spans report).
    emitted_rules: Vec<(&'static str, u64)>,
}

impl Stitcher {
    /// Emitted spans with a rule-chosen parent, by rule, since the start.
    pub fn emitted_rules(&self) -> &[(&'static str, u64)] {
        &self.emitted_rules
    }

    /// Tells `hub` the rule of every edge made while its status page runs.
    pub fn with_status(mut self, hub: Arc<weft_pipeline::status::StatusHub>) -> Stitcher {
        self.status = Some(hub);
        self
    }

    pub fn new(cfg: AutotracingConfig, stats: Arc<Stats>) -> Stitcher {
        let rid_keys = RidKeys::new(&cfg.request_id_headers);
        Stitcher {
            tol: u64::try_from(cfg.clock_tolerance.as_nanos()).unwrap_or(u64::MAX),
            mtt: u64::try_from(cfg.max_transaction_time.as_nanos()).unwrap_or(u64::MAX),
            window_ns: u64::try_from(cfg.window.as_nanos()).unwrap_or(u64::MAX),
            cfg,
            rid_keys,
            nodes: Slab::default(),
            next_node: 1,
            comps: HashMap::default(),
            next_comp: 1,
            ix: Indexes::default(),
            settle_queue: VecDeque::new(),
            hold_queue: VecDeque::new(),
            ready_queue: VecDeque::new(),
            multiplexed: HashMap::default(),
            expiry: VecDeque::new(),
            held_spans: 0,
            stats,
            out: Vec::new(),
            status: None,
            emitted_rules: Vec::new(),
        }
    }

    pub fn held_spans(&self) -> usize {
        self.held_spans
    }

    pub fn known_spans(&self) -> usize {
        self.nodes.len()
    }

    // ---------------------------------------------------------------- ingest

    /// Takes every span of `rs`; spans are ordered by end time so siblings are
    /// decided in the order they happened.
    pub fn ingest(&mut self, rs: Vec<ResourceSpans>, now: Instant) {
        let mut incoming: Vec<(Facts, Held)> = Vec::new();
        for r in rs {
            let res = ResourceFacts::read(r.resource.as_ref());
            let scopes = r.scope_spans.len();
            let mut resource = r.resource;
            for (i, s) in r.scope_spans.into_iter().enumerate() {
                let ebpf = s.scope.as_ref().is_some_and(|sc| sc.name == EBPF_SCOPE);
                let origin = Arc::new(Origin {
                    resource: if i + 1 == scopes {
                        resource.take()
                    } else {
                        resource.clone()
                    },
                    resource_schema: r.schema_url.clone(),
                    scope: s.scope,
                    scope_schema: s.schema_url,
                });
                for span in s.spans {
                    let f = facts::read(&span, ebpf, &res, &self.rid_keys);
                    incoming.push((
                        f,
                        Held {
                            span,
                            origin: origin.clone(),
                        },
                    ));
                }
            }
        }
        incoming.sort_by_key(|(f, _)| (f.end, f.start));
        self.stats.spans_in.add(incoming.len() as u64);
        for (f, held) in incoming {
            self.add_node(f, held, now);
        }
        self.enforce_in_flight_cap(now);
        self.update_gauges();
    }

    fn add_node(&mut self, f: Facts, held: Held, now: Instant) {
        let id = self.next_node;
        self.next_node += 1;
        let comp_id = self.next_comp;
        self.next_comp += 1;
        let hint = if !f.ebpf && f.trace_id != 0 {
            Some(f.trace_id)
        } else {
            f.header_ctx.map(|(t, _)| t)
        };
        self.comps.insert(
            comp_id,
            Comp {
                members: vec![id],
                unsettled: 1,
                first_arrival: now,
                hint,
                fixed: None,
                emitted_any: false,
                emitted: 0,
                ready_since: None,
            },
        );
        self.hold_queue.push_back((now, comp_id));
        // Entries of traces that already left wait for their due time; when they
        // outnumber the spans held, drop them now (memory stays bounded by the caps).
        if self.hold_queue.len() > 2 * self.cfg.max_spans_in_flight + 64 {
            let comps = &self.comps;
            self.hold_queue.retain(|(_, c)| comps.contains_key(c));
            self.ready_queue.retain(|(_, c)| comps.contains_key(c));
        }
        self.note_multiplexing(&f);
        self.index(id, &f);
        let sdk_trace = (!f.ebpf && f.trace_id != 0).then_some(f.trace_id);
        self.nodes.insert(
            id,
            Node {
                f,
                held: Some(Box::new(held)),
                arrival: now,
                settled: false,
                comp: comp_id,
                parent: None,
                parent_span: 0,
                claimed: None,
                merged_into: None,
                absorbed: None,
                children: 0,
                t0_child: false,
                links: Vec::new(),
                emitted: None,
            },
        );
        self.held_spans += 1;
        self.settle_queue.push_back(id);
        // SDK spans of one trace belong together whatever the stitcher decides.
        if let Some(t) = sdk_trace {
            let low = t as u64;
            if let Some(&rep) = self.ix.sdk_trace.get(&low) {
                if let Some(other) = self.nodes.get(&rep) {
                    if same_trace(other.f.trace_id, t) {
                        match other.emitted {
                            None => {
                                let oc = other.comp;
                                self.merge_comps(oc, comp_id);
                            }
                            Some((trace, _)) => {
                                if let Some(c) = self.comps.get_mut(&comp_id) {
                                    c.fixed = Some(trace);
                                }
                            }
                        }
                    }
                }
            }
            self.ix.sdk_trace.insert(low, id);
        }
    }

    /// Marks the thread of eBPF server span `f` as an event loop when another server
    /// span of that thread overlaps it.
    fn note_multiplexing(&mut self, f: &Facts) {
        let (true, Role::Server, Some(p), Some(t)) = (f.ebpf, f.role, &f.process, f.tid) else {
            return;
        };
        let mut overlap = false;
        for o in getq(&self.ix.servers_by_thread, &(p.pid, t)).rev() {
            let Some(of) = self.f(o) else { continue };
            let same_host = of.process.as_ref().is_some_and(|op| op.host == p.host);
            if same_host && of.start < f.end && f.start < of.end {
                overlap = true;
                break;
            }
            if of.end.saturating_add(self.window_ns) < f.start {
                break;
            }
        }
        if overlap {
            if self.multiplexed.len() >= 1 << 16 {
                let horizon = f.end.saturating_sub(MULTIPLEXED_TTL_NS);
                self.multiplexed.retain(|_, seen| *seen >= horizon);
            }
            self.multiplexed.insert((p.clone(), t), f.end);
        }
    }

    fn index(&mut self, id: NodeId, f: &Facts) {
        let ix = &mut self.ix;
        if f.span_id != 0 {
            add(&mut ix.span_id, f.span_id, id);
        }
        if !f.ebpf {
            return;
        }
        if let Some(seq) = f.req_seq {
            add(&mut ix.req_seq, seq, id);
        }
        if let Some((_, s)) = f.header_ctx {
            add(&mut ix.header_span, s, id);
        }
        let Some(p) = &f.process else { return };
        match f.role {
            Role::Server => {
                if let Some(k) = f.sys_req {
                    add(&mut ix.servers_by_sys, (p.clone(), k), id);
                }
                for r in rid_keys(f) {
                    add(&mut ix.servers_by_rid, (p.clone(), r.clone()), id);
                }
                if let Some(t) = f.tid {
                    add(&mut ix.servers_by_thread, (p.pid, t), id);
                }
                if self.cfg.inference {
                    add(&mut ix.servers_by_proc, p.clone(), id);
                }
            }
            Role::Client => {
                if let Some(k) = f.sys_req {
                    add(&mut ix.clients_by_sys_req, (p.clone(), k), id);
                }
                if let Some(k) = f.sys_resp {
                    add(&mut ix.clients_by_sys_resp, (p.clone(), k), id);
                }
                if let Some(r) = &f.rid_req {
                    add(&mut ix.clients_by_rid, (p.clone(), r.clone()), id);
                }
            }
            Role::Other => {}
        }
    }

    fn unindex(&mut self, id: NodeId, f: &Facts) {
        let ix = &mut self.ix;
        let nodes = &self.nodes;
        if f.span_id != 0 {
            remove(&mut ix.span_id, &f.span_id, nodes);
        }
        if !f.ebpf {
            if ix.sdk_trace.get(&(f.trace_id as u64)) == Some(&id) {
                ix.sdk_trace.remove(&(f.trace_id as u64));
            }
            return;
        }
        if let Some(seq) = f.req_seq {
            remove(&mut ix.req_seq, &seq, nodes);
        }
        if let Some((_, s)) = f.header_ctx {
            remove(&mut ix.header_span, &s, nodes);
        }
        let Some(p) = &f.process else { return };
        match f.role {
            Role::Server => {
                if let Some(k) = f.sys_req {
                    remove(&mut ix.servers_by_sys, &(p.clone(), k), nodes);
                }
                for r in rid_keys(f) {
                    remove(&mut ix.servers_by_rid, &(p.clone(), r.clone()), nodes);
                }
                if let Some(t) = f.tid {
                    remove(&mut ix.servers_by_thread, &(p.pid, t), nodes);
                }
                remove(&mut ix.servers_by_proc, p, nodes);
            }
            Role::Client => {
                if let Some(k) = f.sys_req {
                    remove(&mut ix.clients_by_sys_req, &(p.clone(), k), nodes);
                }
                if let Some(k) = f.sys_resp {
                    remove(&mut ix.clients_by_sys_resp, &(p.clone(), k), nodes);
                }
                if let Some(r) = &f.rid_req {
                    remove(&mut ix.clients_by_rid, &(p.clone(), r.clone()), nodes);
                }
            }
            Role::Other => {}
        }
    }

    // ---------------------------------------------------------------- components

    /// Merges the smaller component into the larger; returns the survivor.
    fn merge_comps(&mut self, a: CompId, b: CompId) -> CompId {
        if a == b {
            return a;
        }
        let (Some(ca), Some(cb)) = (self.comps.get(&a), self.comps.get(&b)) else {
            return a;
        };
        let (keep, gone) = if ca.members.len() >= cb.members.len() {
            (a, b)
        } else {
            (b, a)
        };
        let Some(g) = self.comps.remove(&gone) else {
            return keep;
        };
        for m in &g.members {
            if let Some(n) = self.nodes.get_mut(m) {
                n.comp = keep;
            }
        }
        if let Some(k) = self.comps.get_mut(&keep) {
            k.members.extend(g.members);
            k.unsettled += g.unsettled;
            k.hint = fuller(k.hint, g.hint);
            k.fixed = k.fixed.or(g.fixed);
            k.emitted_any |= g.emitted_any;
            k.emitted += g.emitted;
            k.ready_since = None;
            if g.first_arrival < k.first_arrival {
                k.first_arrival = g.first_arrival;
                self.hold_queue.push_back((g.first_arrival, keep));
            }
        }
        keep
    }

    /// The trace id a node is known under: its emitted one, or its component's.
    fn ident_of(&self, id: NodeId) -> Option<TraceKey> {
        let n = self.nodes.get(&id)?;
        match n.emitted {
            Some((t, _)) => Some(t),
            None => self.comps.get(&n.comp).and_then(Comp::ident),
        }
    }

    fn comp_size(&self, id: NodeId) -> usize {
        self.nodes
            .get(&id)
            .filter(|n| n.emitted.is_none())
            .and_then(|n| self.comps.get(&n.comp))
            .map_or(1, |c| c.members.len() + c.emitted)
    }

    // ---------------------------------------------------------------- rules

    fn f(&self, id: NodeId) -> Option<&Facts> {
        self.nodes.get(&id).map(|n| &n.f)
    }

    /// `child` lies inside `parent` in time, with the clock tolerance.
    fn inside(&self, parent: &Facts, child: &Facts) -> bool {
        // The tolerance widens the ends, but a child always overlaps its parent (it
        // starts before the parent ended and ends after it started): with
        // back-to-back requests the tolerance must not reach the next or previous one.
        child.start.saturating_add(self.tol) >= parent.start
            && child.end <= parent.end.saturating_add(self.tol)
            && child.start <= parent.end
            && child.end >= parent.start
    }

    fn same_process(a: &Facts, b: &Facts) -> bool {
        match (&a.process, &b.process) {
            (Some(x), Some(y)) => {
                x.pid == y.pid && (x.host == y.host || x.host.is_empty() || y.host.is_empty())
            }
            _ => true,
        }
    }

    /// Whether an eBPF span of `like`'s process, of `role`, carried a header naming
    /// span `named`: a process that received and sent the same context passed it on.
    fn header_seen(&self, like: &Facts, role: Role, named: u64) -> bool {
        let Some(p) = &like.process else { return true };
        get(&self.ix.header_span, &named).any(|o| {
            self.f(o).is_some_and(|of| {
                of.role == role && of.process.as_ref().is_some_and(|op| op.pid == p.pid)
            })
        })
    }

    fn mirrored(a: &Facts, b: &Facts) -> bool {
        a.local.is_some() && a.local == b.peer && a.peer == b.local
    }

    /// T0 candidates: eBPF client spans that sent the bytes server span `x` received.
    fn t0_candidates(&self, x: &Facts, xid: NodeId) -> Vec<NodeId> {
        let Some(seq) = x.req_seq else {
            return Vec::new();
        };
        get(&self.ix.req_seq, &seq)
            .filter(|&c| c != xid)
            .filter(|&c| self.f(c).is_some_and(|cf| self.t0_match(cf, x)))
            .collect()
    }

    fn t0_match(&self, client: &Facts, server: &Facts) -> bool {
        client.ebpf
            && client.role == Role::Client
            && server.role == Role::Server
            && client.req_seq == server.req_seq
            && Self::mirrored(client, server)
            && match (client.resp_seq, server.resp_seq) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
            && self.inside(client, server)
    }

    /// T2 candidates for eBPF client span `x`: server spans of its process and thread
    /// whose syscall id it carries, directly or through an earlier sibling call.
    fn t2_candidates(&self, x: &Facts, xid: NodeId) -> Vec<NodeId> {
        let (Some(p), Some(k)) = (&x.process, x.sys_req) else {
            return Vec::new();
        };
        let key = (p.clone(), k);
        let mut out: Vec<NodeId> = get(&self.ix.servers_by_sys, &key)
            .filter(|&s| s != xid)
            .collect();
        for sib in get(&self.ix.clients_by_sys_resp, &key) {
            if sib == xid {
                continue;
            }
            let Some(n) = self.nodes.get(&sib) else {
                continue;
            };
            if n.f.end > x.start.saturating_add(self.tol) {
                continue;
            }
            if let Some((s, Tier::T2)) = n.parent {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out.retain(|&s| {
            self.f(s).is_some_and(|sf| {
                sf.ebpf
                    && sf.role == Role::Server
                    && sf.tid.is_some()
                    && sf.tid == x.tid
                    && self.inside(sf, x)
            })
        });
        out
    }

    /// eBPF server spans of the process and thread of SDK span `x` that contain it.
    fn same_thread_servers(&self, x: &Facts, xid: NodeId) -> Vec<NodeId> {
        let (Some(p), Some(t)) = (&x.process, x.tid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in getq(&self.ix.servers_by_thread, &(p.pid, t)).rev() {
            let Some(ef) = self.f(e) else { continue };
            if e != xid
                && ef.ebpf
                && ef.role == Role::Server
                && Self::same_process(ef, x)
                && self.inside(ef, x)
            {
                out.push(e);
            }
            if ef.end.saturating_add(self.window_ns) < x.start {
                break;
            }
        }
        out
    }

    /// Whether another server span of `server`'s thread was open when `x` started:
    /// an event loop, where the thread's syscall id may belong to another request.
    fn thread_busy(&self, server: NodeId, x: &Facts) -> bool {
        let Some(sf) = self.f(server) else {
            return true;
        };
        let (Some(p), Some(t)) = (&sf.process, sf.tid) else {
            return true;
        };
        // A thread once seen serving two requests at once is an event loop: the other
        // request may still be open and not arrived yet.
        if self
            .multiplexed
            .get(&(p.clone(), t))
            .is_some_and(|seen| seen.abs_diff(x.start) < MULTIPLEXED_TTL_NS)
        {
            return true;
        }
        // Newest first. Spans arrive in about the order they end (a span arrives less
        // than `window` after it ended, or it is late anyway), so once one ended a
        // window before `x` started, no earlier one can still have been open.
        for o in getq(&self.ix.servers_by_thread, &(p.pid, t)).rev() {
            let Some(of) = self.f(o) else { continue };
            let same_host = of.process.as_ref().is_some_and(|op| op.host == p.host);
            if o != server && same_host && of.start <= x.start && x.start <= of.end {
                return true;
            }
            if of.end.saturating_add(self.window_ns) < x.start {
                break;
            }
        }
        false
    }

    /// T3 candidates: server spans of `x`'s process that received (or, a gateway,
    /// answered with) the request id `x` sent, with `x` inside them.
    fn t3_candidates(&self, x: &Facts, xid: NodeId) -> Vec<NodeId> {
        let (Some(p), Some(r)) = (&x.process, &x.rid_req) else {
            return Vec::new();
        };
        let key = (p.clone(), r.clone());
        // An id shared by many requests (a constant, a placeholder) identifies none.
        if self
            .ix
            .servers_by_rid
            .get(&key)
            .is_some_and(|v| v.len() > HOT_KEY)
        {
            // Two ids no span has (ids start at 1): counted as ambiguous by `pick`.
            return vec![0, 0];
        }
        get(&self.ix.servers_by_rid, &key)
            .filter(|&s| s != xid)
            .filter(|&s| {
                self.f(s)
                    .is_some_and(|sf| sf.ebpf && sf.role == Role::Server && self.inside(sf, x))
            })
            .collect()
    }

    /// Vetoes common to every tier; None when the edge may be made.
    fn veto(&self, parent: NodeId, child: NodeId) -> Option<Veto> {
        let (Some(pn), Some(cn)) = (self.nodes.get(&parent), self.nodes.get(&child)) else {
            return Some(Veto::Time);
        };
        if pn.f.start.abs_diff(cn.f.start) > self.mtt {
            return Some(Veto::Age);
        }
        if let (Some(a), Some(b)) = (self.ident_of(parent), self.ident_of(child)) {
            if !same_trace(a, b) {
                return Some(Veto::TraceConflict);
            }
        }
        if pn.children >= self.cfg.max_children_per_span {
            return Some(Veto::MaxChildren);
        }
        let same_comp = pn.emitted.is_none() && cn.emitted.is_none() && pn.comp == cn.comp;
        if same_comp {
            // The parent must not descend from the child.
            let mut cur = Some(parent);
            let mut steps = 0;
            while let Some(c) = cur {
                if c == child {
                    return Some(Veto::Cycle);
                }
                steps += 1;
                if steps > self.cfg.max_spans_per_trace {
                    return Some(Veto::Cycle);
                }
                cur = self.nodes.get(&c).and_then(|n| n.parent.map(|(p, _)| p));
            }
        } else if pn.emitted.is_none()
            && self.comp_size(parent) + self.comp_size(child) > self.cfg.max_spans_per_trace
        {
            return Some(Veto::MaxSpansPerTrace);
        }
        None
    }

    /// Applies "exactly one candidate, no veto" to one tier's candidates.
    fn pick(&self, tier: Tier, cands: &[NodeId], child: NodeId, quiet: bool) -> Option<NodeId> {
        match cands {
            [] => None,
            [one] => match self.veto(*one, child) {
                None => Some(*one),
                Some(v) => {
                    if !quiet {
                        self.stats.veto(tier, v);
                    }
                    None
                }
            },
            _ => {
                if !quiet {
                    self.stats.ambiguous(tier);
                }
                None
            }
        }
    }

    /// Runs the tiers for one span. `quiet` leaves the counters alone (used when
    /// checking a late parent against an emitted child).
    fn find_parent(&self, xid: NodeId, quiet: bool) -> Decision {
        let Some(x) = self.f(xid) else {
            return Decision::None;
        };
        // SDK spans: their own parent, or (SDK server span) the eBPF server span that
        // received that parent's id.
        if !x.ebpf {
            if x.parent_span_id == 0 && x.role != Role::Server {
                return Decision::None;
            }
            if x.role == Role::Server && x.parent_span_id == 0 {
                // A trace the SDK started: the eBPF server span of the same call is the
                // one its thread was serving (SDK spans that carry `thread.id`).
                let cands = self.same_thread_servers(x, xid);
                if let Some(e) = self.pick(Tier::T1, &cands, xid, quiet) {
                    return Decision::Parent(e, Tier::T1);
                }
                return Decision::None;
            }
            if x.role == Role::Server {
                let ebpf_servers: Vec<NodeId> = get(&self.ix.header_span, &x.parent_span_id)
                    .filter(|&e| {
                        self.f(e).is_some_and(|ef| {
                            ef.role == Role::Server
                                && self.inside(ef, x)
                                && match x.process {
                                    Some(_) => Self::same_process(ef, x),
                                    // Without the SDK span's pid: not a process that
                                    // passed the same context on (a proxy).
                                    None => !self.header_seen(ef, Role::Client, x.parent_span_id),
                                }
                        })
                    })
                    .collect();
                if let Some(e) = self.pick(Tier::T1, &ebpf_servers, xid, quiet) {
                    return Decision::Parent(e, Tier::T1);
                }
            }
            let own: Vec<NodeId> = get(&self.ix.span_id, &x.parent_span_id)
                .filter(|&p| {
                    p != xid
                        && self
                            .f(p)
                            .is_some_and(|pf| !pf.ebpf && same_trace(pf.trace_id, x.trace_id))
                })
                .collect();
            if let [p] = own.as_slice() {
                if self.veto(*p, xid) != Some(Veto::Cycle) {
                    return Decision::Parent(*p, Tier::Sdk);
                }
            }
            return Decision::None;
        }
        // T0: the client end of the same exchange.
        if x.role == Role::Server {
            let cands = self.t0_candidates(x, xid);
            if let [c] = cands.as_slice() {
                // One-to-one: the client must not match another server span too.
                let rivals = self.f(*c).map_or(0, |cf| {
                    get(&self.ix.req_seq, &x.req_seq.unwrap_or(0))
                        .filter(|&s| s != xid && s != *c)
                        .filter(|&s| self.f(s).is_some_and(|sf| self.t0_match(cf, sf)))
                        .count()
                });
                // A client span that already has its server span (emitted or not).
                let taken = self.nodes.get(c).is_some_and(|n| n.t0_child);
                if rivals > 0 || taken {
                    if !quiet {
                        self.stats.ambiguous(Tier::T0);
                    }
                } else if let Some(p) = self.pick(Tier::T0, &cands, xid, quiet) {
                    return Decision::Parent(p, Tier::T0);
                }
            } else if let Some(p) = self.pick(Tier::T0, &cands, xid, quiet) {
                return Decision::Parent(p, Tier::T0);
            }
        }
        // T1: a captured trace-context header.
        if let Some((trace, span)) = x.header_ctx {
            // A client span's header was written by its own process: one naming a span
            // of another process was passed through unchanged and says nothing about
            // this call's parent, so only same-process spans qualify.
            let named: Vec<NodeId> = get(&self.ix.span_id, &span)
                .filter(|&p| p != xid && self.nodes.contains_key(&p))
                .collect();
            let cands: Vec<NodeId> = named
                .iter()
                .copied()
                .filter(|&p| {
                    self.f(p).is_some_and(|pf| {
                        self.inside(pf, x)
                            && (x.role != Role::Client
                                || match pf.process {
                                    Some(_) => Self::same_process(pf, x),
                                    // The named span's pid unknown: the header is this
                                    // process's own unless it received the same one.
                                    None => !self.header_seen(x, Role::Server, span),
                                })
                    })
                })
                .collect();
            if let Some(p) = self.pick(Tier::T1, &cands, xid, quiet) {
                let sdk_client = self
                    .f(p)
                    .is_some_and(|pf| !pf.ebpf && pf.role == Role::Client);
                if self.cfg.sdk_merge == SdkMerge::Merge && x.role == Role::Client && sdk_client {
                    return Decision::MergeInto(p);
                }
                return Decision::Parent(p, Tier::T1);
            }
            // A server span received the header from a caller weft does not see.
            if named.is_empty() && x.role == Role::Server {
                return Decision::Claimed(trace, span);
            }
        }
        if x.role != Role::Client {
            return Decision::None;
        }
        // T2: the same thread's syscall id.
        let cands = self.t2_candidates(x, xid);
        if let [s] = cands.as_slice() {
            if self.thread_busy(*s, x) {
                if !quiet {
                    self.stats.veto(Tier::T2, Veto::ThreadBusy);
                }
            } else if let Some(p) = self.pick(Tier::T2, &cands, xid, quiet) {
                return Decision::Parent(p, Tier::T2);
            }
        } else if let Some(p) = self.pick(Tier::T2, &cands, xid, quiet) {
            return Decision::Parent(p, Tier::T2);
        }
        // T3: a request id passed on, or generated by a gateway.
        let cands = self.t3_candidates(x, xid);
        if let Some(p) = self.pick(Tier::T3, &cands, xid, quiet) {
            return Decision::Parent(p, Tier::T3);
        }
        Decision::None
    }

    // ---------------------------------------------------------------- settle

    fn settle(&mut self, xid: NodeId) {
        let decision = self.find_parent(xid, false);
        match decision {
            Decision::Parent(p, tier) => self.accept(p, xid, tier),
            Decision::MergeInto(p) => {
                self.accept(p, xid, Tier::T1);
                if let Some(n) = self.nodes.get_mut(&xid) {
                    n.merged_into = Some(p);
                }
            }
            Decision::Claimed(t, s) => {
                if let Some(n) = self.nodes.get_mut(&xid) {
                    n.claimed = Some((t, s));
                }
                self.stats.claimed.inc();
            }
            Decision::None => {}
        }
        // sdk_merge=merge, server side: the eBPF server span of this SDK server span's
        // call is dropped and this span takes its place.
        if self.cfg.sdk_merge == SdkMerge::Merge {
            if let Some(n) = self.nodes.get(&xid) {
                if let Some((e, Tier::T1)) = n.parent {
                    let e_server = self
                        .f(e)
                        .is_some_and(|ef| ef.ebpf && ef.role == Role::Server);
                    if !n.f.ebpf && n.f.role == Role::Server && e_server {
                        let e_free = self
                            .nodes
                            .get(&e)
                            .is_some_and(|en| en.emitted.is_none() && en.merged_into.is_none());
                        if e_free {
                            if let Some(en) = self.nodes.get_mut(&e) {
                                en.merged_into = Some(xid);
                            }
                            if let Some(xn) = self.nodes.get_mut(&xid) {
                                xn.absorbed = Some(e);
                            }
                        }
                    }
                }
            }
        }
        self.link_late_children(xid);
        if self.cfg.inference {
            self.infer(xid);
        }
        if let Some(n) = self.nodes.get_mut(&xid) {
            n.settled = true;
            let comp = n.comp;
            if let Some(c) = self.comps.get_mut(&comp) {
                c.unsettled = c.unsettled.saturating_sub(1);
            }
        }
    }

    fn accept(&mut self, p: NodeId, x: NodeId, tier: Tier) {
        let (p_emitted, p_comp) = match self.nodes.get_mut(&p) {
            Some(pn) => {
                pn.children += 1;
                if tier == Tier::T0 {
                    pn.t0_child = true;
                }
                (pn.emitted, pn.comp)
            }
            None => return,
        };
        let parent_span = self.resolve_span_id(p);
        let x_comp = match self.nodes.get_mut(&x) {
            Some(xn) => {
                xn.parent = Some((p, tier));
                xn.parent_span = parent_span;
                xn.comp
            }
            None => return,
        };
        self.stats.edge(tier);
        match p_emitted {
            None => {
                self.merge_comps(p_comp, x_comp);
            }
            Some((trace, _)) => {
                if let Some(c) = self.comps.get_mut(&x_comp) {
                    c.fixed = Some(trace);
                }
                self.stats.late_joined.inc();
            }
        }
    }

    /// A span settling after a child it would have parented was emitted: the child
    /// keeps its place, this span joins the child's trace with a link to it.
    fn link_late_children(&mut self, pid: NodeId) {
        let Some(p) = self.f(pid) else { return };
        if !p.ebpf {
            return;
        }
        let mut cands: Vec<NodeId> = Vec::new();
        match p.role {
            Role::Client => {
                if let Some(seq) = p.req_seq {
                    cands.extend(get(&self.ix.req_seq, &seq));
                }
            }
            Role::Server => {
                if let Some(proc_) = &p.process {
                    if let Some(k) = p.sys_req {
                        cands.extend(get(&self.ix.clients_by_sys_req, &(proc_.clone(), k)));
                    }
                    for r in rid_keys(p) {
                        let key = (proc_.clone(), r.clone());
                        if self
                            .ix
                            .clients_by_rid
                            .get(&key)
                            .is_some_and(|v| v.len() <= HOT_KEY)
                        {
                            cands.extend(get(&self.ix.clients_by_rid, &key));
                        }
                    }
                }
            }
            Role::Other => {}
        }
        cands.sort_unstable();
        cands.dedup();
        let mut linked = Vec::new();
        for c in cands {
            let Some(cn) = self.nodes.get(&c) else {
                continue;
            };
            if c == pid || cn.emitted.is_none() || cn.parent.is_some() || cn.claimed.is_some() {
                continue;
            }
            if let Decision::Parent(found, _) = self.find_parent(c, true) {
                if found == pid {
                    if let Some((trace, span)) = cn.emitted {
                        linked.push((trace, span));
                    }
                }
            }
        }
        for (trace, span) in linked {
            let comp = self.nodes.get(&pid).map(|n| n.comp);
            let adopt = comp
                .and_then(|c| self.comps.get(&c))
                .is_some_and(|c| c.ident().is_none_or(|i| same_trace(i, trace)));
            if adopt {
                if let Some(c) = comp.and_then(|c| self.comps.get_mut(&c)) {
                    c.fixed = Some(trace);
                }
            }
            if let Some(n) = self.nodes.get_mut(&pid) {
                n.links.push(link(
                    trace,
                    span,
                    &[("weft.autotracing.relation", "late_child")],
                ));
            }
            self.stats.late_linked.inc();
        }
    }

    /// T4: links from an unparented eBPF client span to the server spans of its
    /// process that were open when it started.
    fn infer(&mut self, xid: NodeId) {
        const MAX_INFERRED: usize = 8;
        let Some(n) = self.nodes.get(&xid) else {
            return;
        };
        if !n.f.ebpf || n.f.role != Role::Client || n.parent.is_some() || n.claimed.is_some() {
            return;
        }
        let Some(p) = &n.f.process else { return };
        let mut open: Vec<(TraceKey, u64)> = Vec::new();
        for s in getq(&self.ix.servers_by_proc, p).rev() {
            let Some(sn) = self.nodes.get(&s) else {
                continue;
            };
            if s != xid && self.inside(&sn.f, &n.f) {
                open.push((0, sn.f.span_id));
            }
            if sn.f.end.saturating_add(self.window_ns) < n.f.start {
                break;
            }
        }
        if open.is_empty() || open.len() > MAX_INFERRED {
            return;
        }
        let confidence = format!("{:.3}", 1.0 / open.len() as f64);
        let links: Vec<Link> = open
            .iter()
            .map(|(t, s)| {
                let mut l = link(*t, *s, &[("weft.autotracing.relation", "inferred")]);
                l.attributes
                    .push(str_kv("weft.autotracing.confidence", &confidence));
                l
            })
            .collect();
        self.stats.inferred.add(links.len() as u64);
        if let Some(n) = self.nodes.get_mut(&xid) {
            n.links.extend(links);
        }
    }

    // ---------------------------------------------------------------- tick / emit

    /// Settles what waited `window`, emits finished traces, forgets old spans.
    pub fn tick(&mut self, now: Instant) -> Vec<ResourceSpans> {
        let mut touched = Vec::new();
        while let Some(&id) = self.settle_queue.front() {
            let Some(n) = self.nodes.get(&id) else {
                self.settle_queue.pop_front();
                continue;
            };
            if n.settled || n.emitted.is_some() {
                self.settle_queue.pop_front();
                continue;
            }
            if now.saturating_duration_since(n.arrival) < self.cfg.window {
                break;
            }
            self.settle_queue.pop_front();
            self.settle(id);
            if let Some(n) = self.nodes.get(&id) {
                touched.push(n.comp);
            }
        }
        for c in touched {
            if let Some(comp) = self.comps.get_mut(&c) {
                if comp.unsettled == 0 {
                    comp.ready_since = Some(now);
                    self.ready_queue.push_back((now, c));
                }
            }
        }
        while let Some(&(since, c)) = self.ready_queue.front() {
            if now.saturating_duration_since(since) < self.cfg.grace {
                break;
            }
            self.ready_queue.pop_front();
            let due = self
                .comps
                .get(&c)
                .is_some_and(|comp| comp.unsettled == 0 && comp.ready_since == Some(since));
            if due {
                self.emit(c, true, now);
            }
        }
        while let Some(&(since, c)) = self.hold_queue.front() {
            if now.saturating_duration_since(since) < self.cfg.max_hold {
                break;
            }
            self.hold_queue.pop_front();
            let due = self
                .comps
                .get(&c)
                .is_some_and(|comp| comp.first_arrival <= since);
            if due {
                self.emit(c, false, now);
                self.stats.cut_max_hold.inc();
                // What is still waiting gets a new term.
                if let Some(comp) = self.comps.get_mut(&c) {
                    comp.first_arrival = now;
                    self.hold_queue.push_back((now, c));
                }
            }
        }
        self.expire(now);
        self.update_gauges();
        self.take_output()
    }

    /// Settles and emits everything (shutdown).
    pub fn flush_all(&mut self, now: Instant) -> Vec<ResourceSpans> {
        while let Some(id) = self.settle_queue.pop_front() {
            if self
                .nodes
                .get(&id)
                .is_some_and(|n| !n.settled && n.emitted.is_none())
            {
                self.settle(id);
            }
        }
        let comps: Vec<CompId> = self.comps.keys().copied().collect();
        for c in comps {
            self.emit(c, true, now);
        }
        self.update_gauges();
        self.take_output()
    }

    fn enforce_in_flight_cap(&mut self, now: Instant) {
        while self.held_spans > self.cfg.max_spans_in_flight {
            let Some((_, c)) = self.hold_queue.pop_front() else {
                break;
            };
            // The oldest trace leaves as it is: spans not decided yet leave without
            // a parent (deciding before every candidate is in could pick a wrong one).
            let Some(comp) = self.comps.get(&c) else {
                continue;
            };
            let undecided: Vec<NodeId> = comp
                .members
                .iter()
                .copied()
                .filter(|m| self.nodes.get(m).is_some_and(|n| !n.settled))
                .collect();
            for m in &undecided {
                if let Some(n) = self.nodes.get_mut(m) {
                    n.settled = true;
                }
            }
            if let Some(comp) = self.comps.get_mut(&c) {
                comp.unsettled = 0;
            }
            self.emit(c, true, now);
            self.stats.cut_in_flight.add(undecided.len() as u64);
        }
        self.expire(now);
    }

    fn emit(&mut self, c: CompId, all: bool, now: Instant) {
        let Some(comp) = self.comps.get_mut(&c) else {
            return;
        };
        let trace = match comp.ident() {
            Some(t) => t,
            None => fresh_trace_id(),
        };
        comp.fixed = Some(trace);
        let members = std::mem::take(&mut comp.members);
        let (go, stay): (Vec<NodeId>, Vec<NodeId>) = members
            .into_iter()
            .partition(|m| all || self.nodes.get(m).is_some_and(|n| n.settled));
        if go.is_empty() {
            if let Some(comp) = self.comps.get_mut(&c) {
                comp.members = stay;
            }
            return;
        }
        if let Some(comp) = self.comps.get_mut(&c) {
            if !comp.emitted_any {
                comp.emitted_any = true;
                self.stats.traces_out.inc();
            }
            comp.unsettled = stay
                .iter()
                .filter(|m| self.nodes.get(m).is_some_and(|n| !n.settled))
                .count();
            comp.emitted += go.len();
            comp.members = stay;
        }
        // Span ids relatives point to: a merged span points to its replacement.
        for &m in &go {
            let out_id = self.resolve_span_id(m);
            if let Some(n) = self.nodes.get_mut(&m) {
                n.emitted = Some((trace, out_id));
            }
        }
        for m in go {
            self.emit_node(m, trace, now);
        }
        if self.comps.get(&c).is_some_and(|c| c.members.is_empty()) {
            self.comps.remove(&c);
        }
    }

    fn resolve_span_id(&self, mut id: NodeId) -> u64 {
        for _ in 0..8 {
            let Some(n) = self.nodes.get(&id) else {
                return 0;
            };
            match (n.emitted, n.merged_into) {
                (Some((_, s)), _) if n.merged_into.is_none() => return s,
                (_, Some(next)) => id = next,
                _ => return n.f.span_id,
            }
        }
        self.nodes.get(&id).map_or(0, |n| n.f.span_id)
    }

    fn emit_node(&mut self, id: NodeId, trace: TraceKey, now: Instant) {
        let parent_out = self.output_parent(id);
        let keep = self.cfg.keep_correlation_attributes;
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(held) = n.held.take() else { return };
        self.held_spans = self.held_spans.saturating_sub(1);
        // Remembered for late relatives as long as a trace may be held.
        let expire_at = now.checked_add(self.cfg.max_hold).unwrap_or(now);
        self.expiry.push_back((expire_at, id));
        if n.merged_into.is_some() {
            self.stats.merged.inc();
            return;
        }
        let mut span = held.span;
        // eBPF spans take the trace's id; an SDK span keeps its own, widened to 128
        // bits when the trace knows the full form of it.
        let trace_id = if n.f.ebpf || n.f.trace_id == 0 {
            trace
        } else if same_trace(n.f.trace_id, trace) {
            n.f.trace_id.max(trace)
        } else {
            n.f.trace_id
        };
        span.trace_id = trace_id.to_be_bytes().to_vec();
        let (parent, rule) = parent_out;
        match parent {
            Some(p) => span.parent_span_id = p.to_be_bytes().to_vec(),
            None => {
                if n.f.ebpf {
                    span.parent_span_id.clear();
                }
            }
        }
        if span.parent_span_id.is_empty() || span.parent_span_id.iter().all(|b| *b == 0) {
            self.stats.root(n.f.ebpf, n.f.role);
        }
        if let (Some(rule), Some(hub)) = (rule, &self.status) {
            if let (Some(rules), Ok(id)) =
                (hub.edge_rules(), <[u8; 8]>::try_from(&span.span_id[..]))
            {
                rules.record(id, rule);
            }
        }
        if let Some(rule) = rule {
            match self.emitted_rules.iter_mut().find(|(r, _)| *r == rule) {
                Some((_, n)) => *n += 1,
                None => self.emitted_rules.push((rule, 1)),
            }
        }
        if keep {
            if let Some(rule) = rule {
                span.attributes.push(str_kv("weft.autotracing.rule", rule));
            }
        } else {
            facts::strip_correlation(&mut span);
        }
        span.links.append(&mut n.links);
        self.stats.spans_out.inc();
        self.out.push((held.origin, span));
    }

    /// The parent span id a span leaves with, and the rule that chose it.
    fn output_parent(&self, id: NodeId) -> (Option<u64>, Option<&'static str>) {
        let Some(n) = self.nodes.get(&id) else {
            return (None, None);
        };
        // sdk_merge=merge: an SDK server span takes the parent of the eBPF server span
        // it absorbed.
        if let Some(e) = n.absorbed {
            if let Some((en, (pp, tier))) =
                self.nodes.get(&e).and_then(|en| en.parent.map(|p| (en, p)))
            {
                let id = match self.resolve_span_id(pp) {
                    0 => en.parent_span,
                    id => id,
                };
                return ((id != 0).then_some(id), Some(tier.rule()));
            }
            if let Some((_, s)) = self.nodes.get(&e).and_then(|en| en.claimed) {
                return (Some(s), Some(Tier::T1.rule()));
            }
            return (None, None);
        }
        match (n.parent, n.claimed) {
            (Some((p, tier)), _) => {
                let id = match self.resolve_span_id(p) {
                    0 => n.parent_span,
                    id => id,
                };
                ((id != 0).then_some(id), Some(tier.rule()))
            }
            (None, Some((_, s))) => (Some(s), Some(Tier::T1.rule())),
            (None, None) => (None, None),
        }
    }

    fn take_output(&mut self) -> Vec<ResourceSpans> {
        if self.out.is_empty() {
            return Vec::new();
        }
        let out = std::mem::take(&mut self.out);
        let mut groups: Vec<(Arc<Origin>, Vec<Span>)> = Vec::new();
        let mut at: HashMap<*const Origin, usize> = HashMap::default();
        for (origin, span) in out {
            let key = Arc::as_ptr(&origin);
            match at.get(&key) {
                Some(&i) => groups[i].1.push(span),
                None => {
                    at.insert(key, groups.len());
                    groups.push((origin, vec![span]));
                }
            }
        }
        groups
            .into_iter()
            .map(|(o, spans)| ResourceSpans {
                resource: o.resource.clone(),
                schema_url: o.resource_schema.clone(),
                scope_spans: vec![ScopeSpans {
                    scope: o.scope.clone(),
                    schema_url: o.scope_schema.clone(),
                    spans,
                }],
            })
            .collect()
    }

    /// Forgets emitted spans past their time, and the oldest beyond
    /// `max_spans_in_flight` remembered ones.
    fn expire(&mut self, now: Instant) {
        let cap = self.cfg.max_spans_in_flight;
        while let Some(&(at, id)) = self.expiry.front() {
            let over = self.nodes.len().saturating_sub(self.held_spans) > cap;
            if at > now && !over {
                break;
            }
            self.expiry.pop_front();
            if let Some(n) = self.nodes.get(&id) {
                if n.held.is_none() {
                    if let Some(n) = self.nodes.remove(&id) {
                        self.unindex(id, &n.f);
                    }
                }
            }
        }
    }

    fn update_gauges(&self) {
        self.stats.in_flight_spans.set(self.held_spans as i64);
        self.stats.in_flight_traces.set(self.comps.len() as i64);
        self.stats.known_spans.set(self.nodes.len() as i64);
    }
}

fn fresh_trace_id() -> TraceKey {
    loop {
        let t = fastrand::u128(..);
        if t >> 64 != 0 && t as u64 != 0 {
            return t;
        }
    }
}

fn str_kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

fn link(trace: TraceKey, span: u64, attrs: &[(&str, &str)]) -> Link {
    Link {
        trace_id: if trace == 0 {
            Vec::new()
        } else {
            trace.to_be_bytes().to_vec()
        },
        span_id: span.to_be_bytes().to_vec(),
        attributes: attrs.iter().map(|(k, v)| str_kv(k, v)).collect(),
        ..Default::default()
    }
}
