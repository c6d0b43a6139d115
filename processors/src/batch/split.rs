//! Merging and splitting OTLP payloads by item count, keeping resource and
//! scope around every piece.

use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use weft_pipeline::data::{count_points, Payload};

/// Appends `other` to `into` (same signal; a mismatch is ignored).
pub fn append(into: &mut Payload, other: Payload) {
    match (into, other) {
        (Payload::Traces(a), Payload::Traces(b)) => a.extend(b),
        (Payload::Metrics(a), Payload::Metrics(b)) => a.extend(b),
        (Payload::Logs(a), Payload::Logs(b)) => a.extend(b),
        _ => {}
    }
}

/// Removes up to `max` items from the front of `from` and returns them.
/// Metrics move whole metrics, so a piece may hold a few points more than
/// `max` when one metric has many points.
pub fn take_front(from: &mut Payload, max: usize) -> Payload {
    match from {
        Payload::Traces(rs) => Payload::Traces(take_spans(rs, max)),
        Payload::Logs(rl) => Payload::Logs(take_logs(rl, max)),
        Payload::Metrics(rm) => Payload::Metrics(take_metrics(rm, max)),
    }
}

macro_rules! take_impl {
    ($fn:ident, $res:ty, $scope:ty, $scopes:ident, $items:ident) => {
        fn $fn(from: &mut Vec<$res>, max: usize) -> Vec<$res> {
            let mut out: Vec<$res> = Vec::new();
            let mut left = max;
            while left > 0 && !from.is_empty() {
                let res = &mut from[0];
                let mut piece = <$res>::default();
                piece.resource = res.resource.clone();
                piece.schema_url = res.schema_url.clone();
                while left > 0 && !res.$scopes.is_empty() {
                    let scope = &mut res.$scopes[0];
                    let n = scope.$items.len();
                    if n <= left {
                        left -= n;
                        piece.$scopes.push(res.$scopes.remove(0));
                    } else {
                        let mut part = <$scope>::default();
                        part.scope = scope.scope.clone();
                        part.schema_url = scope.schema_url.clone();
                        part.$items = scope.$items.drain(..left).collect();
                        left = 0;
                        piece.$scopes.push(part);
                    }
                }
                if res.$scopes.is_empty() {
                    from.remove(0);
                }
                out.push(piece);
            }
            out
        }
    };
}

take_impl!(take_spans, ResourceSpans, ScopeSpans, scope_spans, spans);
take_impl!(take_logs, ResourceLogs, ScopeLogs, scope_logs, log_records);

fn take_metrics(from: &mut Vec<ResourceMetrics>, max: usize) -> Vec<ResourceMetrics> {
    let mut out = Vec::new();
    let mut left = max;
    while left > 0 && !from.is_empty() {
        let res = &mut from[0];
        let mut piece = ResourceMetrics {
            resource: res.resource.clone(),
            schema_url: res.schema_url.clone(),
            ..Default::default()
        };
        while left > 0 && !res.scope_metrics.is_empty() {
            let scope = &mut res.scope_metrics[0];
            let mut part = ScopeMetrics {
                scope: scope.scope.clone(),
                schema_url: scope.schema_url.clone(),
                ..Default::default()
            };
            while left > 0 && !scope.metrics.is_empty() {
                let m = scope.metrics.remove(0);
                let points = count_points(&[ResourceMetrics {
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![m.clone()],
                        ..Default::default()
                    }],
                    ..Default::default()
                }])
                .max(1);
                left = left.saturating_sub(points);
                part.metrics.push(m);
            }
            if scope.metrics.is_empty() {
                res.scope_metrics.remove(0);
            }
            piece.scope_metrics.push(part);
        }
        if res.scope_metrics.is_empty() {
            from.remove(0);
        }
        out.push(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn spans(names: &[&[&str]]) -> Payload {
        Payload::Traces(
            names
                .iter()
                .map(|scopes| ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: scopes
                            .iter()
                            .map(|n| Span {
                                name: n.to_string(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        )
    }

    fn names(p: &Payload) -> Vec<String> {
        match p {
            Payload::Traces(rs) => rs
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| s.name.clone())
                .collect(),
            _ => vec![],
        }
    }

    #[test]
    fn splits_across_resources_in_order() {
        let mut p = spans(&[&["a", "b", "c"], &["d", "e"]]);
        let first = take_front(&mut p, 4);
        assert_eq!(names(&first), ["a", "b", "c", "d"]);
        assert_eq!(names(&p), ["e"]);
        let rest = take_front(&mut p, 4);
        assert_eq!(names(&rest), ["e"]);
        assert!(p.is_empty());
    }

    #[test]
    fn splits_inside_a_scope() {
        let mut p = spans(&[&["a", "b", "c"]]);
        assert_eq!(names(&take_front(&mut p, 2)), ["a", "b"]);
        assert_eq!(names(&p), ["c"]);
        assert_eq!(p.item_count(), 1);
    }
}
