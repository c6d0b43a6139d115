//! Jaeger's span model, one shape for Thrift and protobuf: decoders fill it,
//! encoders read it, and the OTLP translation works on it alone.
//!
//! Times are Unix nanoseconds as the collector's translator computes them
//! from either wire form (Thrift carries microseconds).

/// One Jaeger batch: spans of one process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub process: Option<Process>,
    pub spans: Vec<Span>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Process {
    pub service_name: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    pub trace_id_high: u64,
    pub trace_id_low: u64,
    pub span_id: u64,
    /// Thrift's explicit parent; 0 when absent (always 0 from protobuf,
    /// which names the parent by a CHILD_OF reference).
    pub parent_span_id: u64,
    pub operation_name: String,
    pub references: Vec<SpanRef>,
    /// Bit 1: sampled; bit 2: debug.
    pub flags: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub tags: Vec<Tag>,
    pub logs: Vec<Log>,
    /// A span's own process (protobuf only); it takes precedence over the
    /// batch's.
    pub process: Option<Process>,
}

impl Span {
    /// The parent as the collector infers it: the explicit parent id, else
    /// the first CHILD_OF reference in the same trace, else the first
    /// FOLLOWS_FROM reference in the same trace, else 0.
    pub fn parent_id(&self) -> u64 {
        if self.parent_span_id != 0 {
            return self.parent_span_id;
        }
        let same_trace = |r: &&SpanRef| {
            r.trace_id_high == self.trace_id_high && r.trace_id_low == self.trace_id_low
        };
        if let Some(r) = self
            .references
            .iter()
            .filter(same_trace)
            .find(|r| r.ref_type == RefType::ChildOf)
        {
            return r.span_id;
        }
        self.references
            .iter()
            .filter(same_trace)
            .find(|r| r.ref_type == RefType::FollowsFrom)
            .map_or(0, |r| r.span_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefType {
    ChildOf,
    FollowsFrom,
    /// A value outside the IDL's enum, kept as sent.
    Other(i32),
}

impl RefType {
    pub fn from_i32(v: i32) -> RefType {
        match v {
            0 => RefType::ChildOf,
            1 => RefType::FollowsFrom,
            other => RefType::Other(other),
        }
    }

    pub fn as_i32(self) -> i32 {
        match self {
            RefType::ChildOf => 0,
            RefType::FollowsFrom => 1,
            RefType::Other(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRef {
    pub ref_type: RefType,
    pub trace_id_high: u64,
    pub trace_id_low: u64,
    pub span_id: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Log {
    pub timestamp_ns: u64,
    pub fields: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: TagValue,
}

impl Tag {
    pub fn string(key: &str, value: &str) -> Tag {
        Tag {
            key: key.to_string(),
            value: TagValue::String(value.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    String(String),
    Bool(bool),
    Long(i64),
    Double(f64),
    Binary(Vec<u8>),
    /// A type code outside the IDL's enum, as the sender's enum name prints
    /// it (`<UNSET>` for Thrift, the number for protobuf).
    Unknown(String),
}

impl TagValue {
    /// The string value, or "" for any other type (as generated getters do).
    pub fn str_or_empty(&self) -> &str {
        match self {
            TagValue::String(s) => s,
            _ => "",
        }
    }
}
