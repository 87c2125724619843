//! Job directories mirrored through a shared store: a job checkpointed on machine A
//! resumes on machine B, sidecars always travel after their weights, a failed upload
//! never leaves a checkpoint that looks complete, and files being written stay home.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use sweeper::artifacts::{checkpoint_file_names, ArtifactError, Artifacts};
use uuid::Uuid;

const JOB: &str = "0190f5e2-7c1a-7d3e-8f00-00000000002a";
/// Checkpoints the training code keeps in a job directory.
const KEEP: i64 = 2;

/// Deterministic, epoch-specific contents, so a file from the wrong epoch shows.
fn contents(epoch: i64, part: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as i64 * 31 + epoch * 7 + part as i64 * 101) as u8)
        .collect()
}

/// Writes epoch `epoch`'s checkpoint the way training does (each file to `*.tmp`,
/// renamed; the sidecar last) and prunes all but the newest `KEEP`.
fn write_checkpoint(dir: &Path, epoch: i64) {
    std::fs::create_dir_all(dir).unwrap();
    let sizes = [40_000, 80_000, 120];
    for (part, name) in checkpoint_file_names(epoch).iter().enumerate() {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, contents(epoch, part, sizes[part])).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    let old = epoch - KEEP;
    if old >= 1 {
        for name in checkpoint_file_names(old).iter().rev() {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn a_job_checkpointed_on_machine_a_resumes_on_machine_b() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = format!("file://{}", tmp.path().join("shared").display());
    let job = Uuid::parse_str(JOB).unwrap();
    let prefix = Artifacts::job_prefix("study", job);

    // Machine A trains three epochs and mirrors its job directory after each.
    let machine_a = Artifacts::from_url(&shared).unwrap();
    let dir_a = tmp.path().join("machine-a").join("jobs").join(JOB);
    for epoch in 1..=3 {
        write_checkpoint(&dir_a, epoch);
        let report = machine_a.sync_up(&dir_a, &prefix).await.unwrap();
        let [weights, optimizer, sidecar] = checkpoint_file_names(epoch);
        assert_eq!(
            report.transferred,
            [optimizer, weights, sidecar],
            "epoch {epoch}: only the new checkpoint goes up, sidecar last"
        );
        // The previous checkpoint is still local and already stored.
        assert_eq!(report.unchanged as i64, 3 * (epoch - 1).min(KEEP - 1));
    }
    // Epoch 1 was pruned on A, so the store drops it too; epochs 2 and 3 stay.
    let keys = machine_a.list(&prefix).await.unwrap();
    let expected: Vec<String> = [2, 3]
        .iter()
        .flat_map(|e| checkpoint_file_names(*e))
        .map(|n| format!("{prefix}/{n}"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(keys, expected);

    // Machine B (its own scratch directory, its own store handle) finds epoch 3.
    let machine_b = Artifacts::from_url(&shared).unwrap();
    let latest = machine_b
        .latest_checkpoint("study", job)
        .await
        .unwrap()
        .expect("a complete checkpoint in the shared store");
    assert_eq!(latest.epoch, 3);
    assert_eq!(latest.sidecar, format!("{prefix}/epoch-0003.json"));

    let dir_b = tmp.path().join("machine-b").join("jobs").join(JOB);
    let fetched = machine_b
        .fetch_latest_checkpoint(&prefix, &dir_b)
        .await
        .unwrap()
        .expect("fetched");
    assert_eq!(fetched.epoch, 3);
    for (local, remote) in [
        (&fetched.weights, "epoch-0003.ot"),
        (&fetched.optimizer, "epoch-0003.optim.ot"),
        (&fetched.sidecar, "epoch-0003.json"),
    ] {
        assert_eq!(read(local), read(&dir_a.join(remote)), "{remote}");
    }

    // A full mirror brings epoch 2 as well; a second one moves nothing.
    let down = machine_b.sync_down(&prefix, &dir_b).await.unwrap();
    assert_eq!(down.unchanged, 3);
    assert_eq!(
        down.transferred,
        ["epoch-0002.optim.ot", "epoch-0002.ot", "epoch-0002.json"]
    );
    let again = machine_b.sync_down(&prefix, &dir_b).await.unwrap();
    assert!(again.transferred.is_empty());
    assert_eq!(again.unchanged, 6);

    // B resumes at epoch 4 and mirrors: the store now holds 3 and 4.
    write_checkpoint(&dir_b, 4);
    let up = machine_b.sync_up(&dir_b, &prefix).await.unwrap();
    assert_eq!(
        up.removed.first().map(String::as_str),
        Some("epoch-0002.json")
    );
    assert_eq!(up.removed.len(), 3);
    let latest = machine_a
        .latest_checkpoint("study", job)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.epoch, 4);
    assert_eq!(
        machine_a.get_bytes(&latest.weights).await.unwrap(),
        read(&dir_b.join("epoch-0004.ot"))
    );
}

#[tokio::test]
async fn files_being_written_stay_local_and_other_outputs_go_up() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Artifacts::from_url(tmp.path().join("store").to_str().unwrap()).unwrap();
    let dir = tmp.path().join("job");
    write_checkpoint(&dir, 1);
    std::fs::write(dir.join("epoch-0002.ot.tmp"), b"half").unwrap();
    std::fs::write(dir.join(".epoch-0002.ot.part-1a2b"), b"half").unwrap();
    std::fs::create_dir_all(dir.join("plots")).unwrap();
    std::fs::write(dir.join("plots").join("loss.svg"), b"<svg/>").unwrap();

    let report = store.sync_up(&dir, "s/j").await.unwrap();
    assert_eq!(
        report.transferred,
        [
            "epoch-0001.optim.ot",
            "epoch-0001.ot",
            "plots/loss.svg",
            "epoch-0001.json"
        ]
    );
    assert_eq!(report.bytes, 40_000 + 80_000 + 6 + 120);
    assert_eq!(
        store.get_bytes("s/j/plots/loss.svg").await.unwrap(),
        b"<svg/>"
    );

    // A sidecar whose checkpoint is incomplete stays home until it is complete.
    let [weights, optimizer, sidecar] = checkpoint_file_names(2);
    std::fs::write(dir.join(&weights), b"w2").unwrap();
    std::fs::write(dir.join(&sidecar), b"{}").unwrap();
    let partial = store.sync_up(&dir, "s/j").await.unwrap();
    assert_eq!(partial.transferred, [weights.as_str()]);
    assert_eq!(partial.skipped, [sidecar.as_str()]);
    assert_eq!(
        store
            .latest_checkpoint_under("s/j")
            .await
            .unwrap()
            .unwrap()
            .epoch,
        1
    );
    std::fs::write(dir.join(&optimizer), b"o2").unwrap();
    let complete = store.sync_up(&dir, "s/j").await.unwrap();
    assert_eq!(complete.transferred, [optimizer, sidecar]);
    assert!(complete.skipped.is_empty());
    assert_eq!(
        store
            .latest_checkpoint_under("s/j")
            .await
            .unwrap()
            .unwrap()
            .epoch,
        2
    );

    // A missing job directory uploads nothing and is not an error.
    let none = store
        .sync_up(&tmp.path().join("absent"), "s/k")
        .await
        .unwrap();
    assert_eq!(none, Default::default());
    assert!(store
        .fetch_latest_checkpoint("s/k", &tmp.path().join("k"))
        .await
        .unwrap()
        .is_none());
}

/// An in-memory store that records the order in which objects become visible and
/// can refuse uploads of keys with a given ending (a network failure).
#[derive(Debug, Default)]
struct Recording {
    inner: InMemory,
    puts: Mutex<Vec<String>>,
    fail_suffix: Mutex<Option<String>>,
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let fail = self.fail_suffix.lock().unwrap().clone();
        if fail.is_some_and(|s| location.as_ref().ends_with(&s)) {
            return Err(object_store::Error::Generic {
                store: "Recording",
                source: "connection reset by peer".into(),
            });
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.puts.lock().unwrap().push(location.to_string());
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &ObjectPath) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &ObjectPath, to: &ObjectPath) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
    ) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[tokio::test]
async fn every_sidecar_becomes_visible_after_its_weights_and_optimizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    // Two checkpoints written before one sync (a worker that fell behind).
    write_checkpoint(&dir, 1);
    write_checkpoint(&dir, 2);
    let recording = Arc::new(Recording::default());
    let store = Artifacts::from_store(recording.clone(), "recording");
    store.sync_up(&dir, "s/j").await.unwrap();

    let puts = recording.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 6, "{puts:?}");
    let position: HashMap<&str, usize> = puts
        .iter()
        .enumerate()
        .map(|(i, key)| (key.rsplit('/').next().unwrap(), i))
        .collect();
    for epoch in [1, 2] {
        let [weights, optimizer, sidecar] = checkpoint_file_names(epoch);
        assert!(
            position[sidecar.as_str()] > position[weights.as_str()],
            "{puts:?}"
        );
        assert!(
            position[sidecar.as_str()] > position[optimizer.as_str()],
            "{puts:?}"
        );
    }
}

#[tokio::test]
async fn a_failed_upload_never_leaves_a_checkpoint_that_looks_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    write_checkpoint(&dir, 1);
    let recording = Arc::new(Recording::default());
    let store = Artifacts::from_store(recording.clone(), "recording");

    // The weights fail to go up (after the optimizer state): the sidecar must not
    // follow.
    *recording.fail_suffix.lock().unwrap() = Some("epoch-0001.ot".into());
    let err = store.sync_up(&dir, "s/j").await.unwrap_err();
    assert!(
        matches!(err, ArtifactError::Store { .. }) && err.is_retryable(),
        "{err}"
    );
    assert!(err.to_string().contains("s/j/epoch-0001.ot"), "{err}");
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(
        store.list("s/j").await.unwrap(),
        ["s/j/epoch-0001.optim.ot"]
    );
    assert_eq!(store.latest_checkpoint_under("s/j").await.unwrap(), None);

    // The sidecar itself fails: the weights are there, the checkpoint is not.
    *recording.fail_suffix.lock().unwrap() = Some(".json".into());
    assert!(store.sync_up(&dir, "s/j").await.is_err());
    assert_eq!(store.list("s/j").await.unwrap().len(), 2);
    assert_eq!(store.latest_checkpoint_under("s/j").await.unwrap(), None);

    // The network recovers: the next sync completes it, uploading only the sidecar.
    *recording.fail_suffix.lock().unwrap() = None;
    let report = store.sync_up(&dir, "s/j").await.unwrap();
    assert_eq!(report.transferred, ["epoch-0001.json"]);
    assert_eq!(report.unchanged, 2);
    let latest = store.latest_checkpoint_under("s/j").await.unwrap().unwrap();
    assert_eq!(latest.epoch, 1);
}
