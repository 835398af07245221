//! The queue file's lock (SQLite): one process at a time works a queue file, because
//! re-queuing the events a previous process left "running" is only safe when no other process
//! is working on them. Servers and a queue-working `poll` hold it while they run; the offline
//! commands (`rotate-key`, `restore`) hold it so that neither runs beside them.

/// Another process (a server, or `poll` working the queue alone) holds the queue's lock.
#[derive(Debug, thiserror::Error)]
#[error("another salesbot-sync process (a server, or `poll` working the queue alone) is running on {events_db} (lock {lock} is held)")]
pub struct QueueHeld {
    pub events_db: String,
    pub lock: String,
}

/// Takes the queue's lock file: only its holder runs workers (and re-queues orphans), and the
/// offline commands (`rotate-key`, `restore`) hold it so no server runs beside them. Fails
/// with [`QueueHeld`] when another process holds it.
pub fn lock_queue(events_db: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut name = events_db.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    file.try_lock().map_err(|_| QueueHeld {
        events_db: events_db.display().to_string(),
        lock: path.display().to_string(),
    })?;
    Ok(file)
}
