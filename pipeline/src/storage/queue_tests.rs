use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;

fn traces(names: &[&str]) -> Batch {
    let spans = names
        .iter()
        .enumerate()
        .map(|(i, n)| Span {
            trace_id: vec![1; 16],
            span_id: vec![i as u8 + 1; 8],
            name: n.to_string(),
            ..Default::default()
        })
        .collect();
    Batch::new(
        Payload::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }]),
        Arc::from("test"),
    )
}

fn names(b: &Batch) -> Vec<String> {
    match b.payload() {
        Payload::Traces(rs) => rs
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect(),
        _ => panic!("not traces"),
    }
}

async fn push(q: &FileQueue, names: &[&str]) -> u64 {
    let b = traces(names);
    q.push(Signal::Traces, names.len() as u64, &encode_batch(&b))
        .await
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-queue-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn batches_come_back_in_order_and_leave_when_acked() {
    let dir = scratch("order");
    let (q, rec) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    assert_eq!(rec, Recovery::default());
    push(&q, &["a", "b"]).await;
    push(&q, &["c"]).await;
    assert_eq!(q.used(), 2);
    let p1 = q.pop().await;
    let p2 = q.pop().await;
    assert_eq!(
        (names(&p1.batch), p1.items),
        (vec!["a".into(), "b".into()], 2)
    );
    assert_eq!(names(&p2.batch), vec!["c".to_string()]);
    assert!(q.try_pop().is_none());
    q.ack(p1.seq);
    q.ack(p2.seq);
    assert_eq!(q.used(), 0);
    drop(q);
    let (q, rec) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    assert_eq!(rec.records, 0);
    assert!(q.try_pop().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn what_was_not_acked_is_sent_first_after_a_restart() {
    let dir = scratch("restart");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    for n in ["a", "b", "c", "d"] {
        push(&q, &[n]).await;
    }
    let a = q.pop().await;
    let b = q.pop().await;
    q.ack(b.seq); // b sent; a in flight when the process dies
    let _ = a;
    drop(q);
    let (q, rec) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    assert_eq!((rec.records, rec.items), (3, 3));
    assert!(rec.damage.is_empty());
    let new = push(&q, &["e"]).await;
    let order: Vec<String> = (0..4)
        .map(|_| {
            let p = q.try_pop().unwrap();
            q.ack(p.seq);
            names(&p.batch).remove(0)
        })
        .collect();
    assert_eq!(order, ["a", "c", "d", "e"]);
    assert!(new > 3, "sequence numbers go on after a restart");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn nacked_batches_go_back_to_the_front() {
    let dir = scratch("nack");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    for n in ["a", "b", "c"] {
        push(&q, &[n]).await;
    }
    let a = q.pop().await;
    let b = q.pop().await;
    q.nack(b.seq);
    q.nack(a.seq);
    let first = q.pop().await;
    assert_eq!(names(&first.batch), ["a"]);
    assert_eq!(names(&q.pop().await.batch), ["b"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn segments_roll_and_sent_ones_are_deleted() {
    let dir = scratch("roll");
    let opts = OpenOptions {
        segment_bytes: 200,
        capacity: 100,
        ..OpenOptions::default()
    };
    let (q, _) = FileQueue::open(&dir, opts.clone()).unwrap();
    for i in 0..20 {
        push(&q, &[&format!("span-{i}")]).await;
    }
    assert!(segments(&dir).len() > 3, "{:?}", segments(&dir));
    for _ in 0..20 {
        let p = q.pop().await;
        q.ack(p.seq);
    }
    assert_eq!(segments(&dir).len(), 1, "only the head segment is left");
    drop(q);
    let (_q, rec) = FileQueue::open(&dir, opts).unwrap();
    assert_eq!(rec.records, 0);
    assert_eq!(segments(&dir).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_write_cut_short_keeps_the_records_before_it() {
    let dir = scratch("cut");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    push(&q, &["a"]).await;
    push(&q, &["b"]).await;
    drop(q);
    let seg = dir.join(&segments(&dir)[0]);
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = FsOpen::new().write(true).open(&seg).unwrap();
    f.set_len(len - 7).unwrap();
    let (q, rec) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    assert_eq!(rec.records, 1);
    assert_eq!(rec.damage.len(), 1, "{:?}", rec.damage);
    assert!(rec.damage[0].contains("cut short"), "{:?}", rec.damage);
    assert_eq!(names(&q.pop().await.batch), ["a"]);
    assert!(q.try_pop().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_damaged_record_is_skipped_and_the_rest_kept() {
    let dir = scratch("flip");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    push(&q, &["a"]).await;
    push(&q, &["b"]).await;
    push(&q, &["c"]).await;
    drop(q);
    let seg = dir.join(&segments(&dir)[0]);
    let mut bytes = std::fs::read(&seg).unwrap();
    let rec_len = bytes.len() / 3;
    bytes[rec_len + HEADER + 3] ^= 0xff; // inside b's payload
    std::fs::write(&seg, &bytes).unwrap();
    let (q, rec) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    assert_eq!(rec.records, 2);
    assert_eq!(rec.damaged_bytes, rec_len as u64);
    let got: Vec<String> = (0..2)
        .map(|_| names(&q.try_pop().unwrap().batch).remove(0))
        .collect();
    assert_eq!(got, ["a", "c"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_damaged_ack_log_means_resending_never_losing() {
    let dir = scratch("acks");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    push(&q, &["a"]).await;
    push(&q, &["b"]).await;
    let a = q.pop().await;
    q.ack(a.seq);
    drop(q);
    let acks = dir.join("acks.log");
    let mut bytes = std::fs::read(&acks).unwrap();
    assert_eq!(bytes.len(), ACK_LEN);
    bytes[9] ^= 1;
    std::fs::write(&acks, &bytes).unwrap();
    let (q, rec) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    assert_eq!(rec.records, 2, "a is sent again: a duplicate, not a loss");
    assert_eq!(rec.damage.len(), 1);
    assert_eq!(names(&q.try_pop().unwrap().batch), ["a"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_size_limit_refuses_and_room_comes_back() {
    let dir = scratch("full");
    let opts = OpenOptions {
        capacity: 3,
        unit: Unit::Items,
        ..OpenOptions::default()
    };
    let (q, _) = FileQueue::open(&dir, opts).unwrap();
    // Larger than the whole queue, but the queue is empty: taken.
    push(&q, &["a", "b", "c", "d"]).await;
    let b = traces(&["e"]);
    let err = q
        .push(Signal::Traces, 1, &encode_batch(&b))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Full));
    assert!(
        !q.wait_for_room(1, std::time::Duration::from_millis(20))
            .await
    );
    let p = q.pop().await;
    q.ack(p.seq);
    assert!(
        q.wait_for_room(1, std::time::Duration::from_millis(20))
            .await
    );
    push(&q, &["e"]).await;
    push(&q, &["f", "g"]).await;
    assert_eq!(q.used(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn one_process_per_directory() {
    let dir = scratch("lock");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    // The same process gets the same queue back.
    let (again, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    assert!(Arc::ptr_eq(&q, &again));
    // Another opener (as another process would) is refused after the timeout.
    let opts = OpenOptions {
        lock_timeout: std::time::Duration::from_millis(50),
        ..OpenOptions::default()
    };
    let err = FileQueue::open_fresh(&dir, opts).err().unwrap();
    assert!(matches!(err, QueueError::Locked(_)), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn logs_and_metrics_round_trip() {
    let dir = scratch("signals");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    let logs = Batch::new(
        Payload::Logs(vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    severity_text: "WARN".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }]),
        Arc::from("t"),
    );
    q.push(Signal::Logs, 1, &encode_batch(&logs)).await.unwrap();
    drop(q);
    let (q, rec) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    assert_eq!(rec.items, 1);
    let p = q.pop().await;
    assert_eq!(p.batch.signal(), Signal::Logs);
    assert_eq!(p.batch.payload(), logs.payload());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_record_damaged_after_it_was_written_is_dropped_and_counted() {
    let dir = scratch("late");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    push(&q, &["a"]).await;
    push(&q, &["b", "c"]).await;
    let seg = dir.join(&segments(&dir)[0]);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[HEADER + 2] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let p = q.pop().await;
    assert_eq!(names(&p.batch), ["b", "c"]);
    assert_eq!(q.take_damaged_reads(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn ack_log_entries(dir: &Path) -> usize {
    std::fs::metadata(dir.join("acks.log")).unwrap().len() as usize / ACK_LEN
}

#[tokio::test]
async fn compaction_keeps_every_ack_still_needed_and_no_unsent_record_is_marked_sent() {
    let dir = scratch("compact");
    let opts = OpenOptions {
        ack_compact_entries: 8,
        segment_bytes: 4096,
        ..OpenOptions::default()
    };
    let (q, _) = FileQueue::open(&dir, opts.clone()).unwrap();
    // A queue that keeps up: each batch is sent before the next arrives, so the
    // head segment is empty of live records again and again.
    for i in 0..200 {
        push(&q, &[&format!("sent-{i}")]).await;
        let p = q.pop().await;
        q.ack(p.seq);
    }
    // Then a backlog: written, never taken, while compactions run on the acks of
    // a second sender's work.
    for i in 0..5 {
        push(&q, &[&format!("waiting-{i}")]).await;
    }
    let held: Vec<Popped> = (0..5).map(|_| q.try_pop().unwrap()).collect();
    for i in 0..60 {
        push(&q, &[&format!("more-{i}")]).await;
        let p = q.pop().await;
        q.ack(p.seq);
    }
    assert!(
        ack_log_entries(&dir) < 200,
        "the ack log was never compacted"
    );
    for p in &held {
        q.nack(p.seq);
    }
    drop(held);
    drop(q);
    let (q, rec) = FileQueue::open(&dir, opts).unwrap();
    // Exactly the five never sent come back; nothing sent is sent again.
    assert_eq!(rec.records, 5, "{rec:?}");
    let got: Vec<String> = (0..5)
        .map(|_| names(&q.try_pop().unwrap().batch).remove(0))
        .collect();
    let want: Vec<String> = (0..5).map(|i| format!("waiting-{i}")).collect();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_push_dropped_while_syncing_leaks_nothing() {
    let dir = scratch("cancel");
    let opts = OpenOptions {
        fsync: true,
        capacity: 2,
        ..OpenOptions::default()
    };
    let (q, _) = FileQueue::open(&dir, opts).unwrap();
    for i in 0..4 {
        let b = traces(&[&format!("s{i}")]);
        let payload = encode_batch(&b);
        // Dropped at its first await (the sync): the record is queued anyway.
        let mut fut = Box::pin(q.push(Signal::Traces, 1, &payload));
        let _ = futures_util::poll!(fut.as_mut());
        drop(fut);
        let p = q.pop().await;
        assert_eq!(names(&p.batch), [format!("s{i}")]);
        q.ack(p.seq);
    }
    assert_eq!(q.used(), 0, "capacity leaked");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reopened_queue_takes_the_new_unit_and_limit() {
    let dir = scratch("reconf");
    let (q, _) = FileQueue::open(&dir, OpenOptions::default()).unwrap();
    push(&q, &["a", "b", "c"]).await;
    assert_eq!(q.used(), 1);
    q.reconfigure(4, Unit::Items, false);
    assert_eq!(q.used(), 3);
    let b = traces(&["d", "e"]);
    assert!(matches!(
        q.push(Signal::Traces, 2, &encode_batch(&b)).await,
        Err(QueueError::Full)
    ));
    push(&q, &["d"]).await;
    let _ = std::fs::remove_dir_all(&dir);
}
