//! Records of the process groups of running steps, kept in `DATA_DIR/running/`, and
//! the start-up sweep that kills the groups a previous run left behind.
//!
//! A step's shell dies with the server even on SIGKILL (`PR_SET_PDEATHSIG`, see
//! [`super::process`]), but what the shell started (a background `sleep`, a
//! compiler) does not get that signal. So each running step has a file named after
//! its job holding its process group id, written right after the step starts and
//! removed once the group is gone. At start-up, every file left means a run ended
//! without cleaning up: the group is killed if it still holds a process of ours,
//! one whose environment carries `BUILDCAST_JOB_ID=<that job>` (a recycled group
//! id belonging to someone else is left alone).

use std::io;
use std::path::{Path, PathBuf};

use crate::job::JobId;

/// The folder of records, `DATA_DIR/running/`.
#[derive(Debug, Clone)]
pub struct GroupRecords {
    dir: PathBuf,
}

/// A running step's record; removed when dropped.
#[derive(Debug)]
pub struct Record {
    path: PathBuf,
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a process group record");
        }
    }
}

/// A group killed by [`GroupRecords::kill_leftovers`].
#[derive(Debug, PartialEq, Eq)]
pub struct Leftover {
    pub job: String,
    pub pgid: i32,
    /// Processes of the job found in the group.
    pub processes: usize,
}

impl GroupRecords {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("running"),
        }
    }

    /// Records that `job`'s current step runs as process group `pgid`.
    pub fn record(&self, job: &JobId, pgid: i32) -> io::Result<Record> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(job.as_str());
        std::fs::write(&path, format!("{pgid}\n"))?;
        Ok(Record { path })
    }

    /// Kills (SIGKILL) every recorded group that still holds a process of its job,
    /// and removes every record. Returns the groups killed.
    pub fn kill_leftovers(&self) -> io::Result<Vec<Leftover>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut killed = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let job = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|&pgid| pgid > 1)
            {
                Some(pgid) => {
                    let processes = processes_of(pgid, &job);
                    if processes > 0 {
                        // SAFETY: killpg only sends a signal.
                        if unsafe { libc::killpg(pgid, libc::SIGKILL) } == -1 {
                            let e = io::Error::last_os_error();
                            if e.raw_os_error() != Some(libc::ESRCH) {
                                tracing::error!(job_id = %job, pgid, error = %e, "cannot kill a process group left by the last run");
                            }
                        }
                        killed.push(Leftover {
                            job: job.clone(),
                            pgid,
                            processes,
                        });
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "ignoring an unreadable process group record");
                }
            }
            std::fs::remove_file(&path)?;
        }
        Ok(killed)
    }
}

/// How many live processes of group `pgid` carry `BUILDCAST_JOB_ID=<job>`.
fn processes_of(pgid: i32, job: &str) -> usize {
    let marker = format!("BUILDCAST_JOB_ID={job}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            let dir = e.path();
            group_of(&dir) == Some(pgid)
                && std::fs::read(dir.join("environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == marker.as_bytes()))
        })
        .count()
}

/// The process group of the live (not zombie) process at `/proc/<pid>`.
fn group_of(proc_dir: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn leftover_groups_of_the_job_are_killed_and_others_left_alone() {
        let data = std::env::temp_dir().join(format!("buildcast-groups-{}", std::process::id()));
        let records = GroupRecords::new(&data);
        let job = JobId::parse("groups-test-job").unwrap();
        let mut ours = std::process::Command::new("sh")
            .args(["-c", "sleep 100 & wait"])
            .env("BUILDCAST_JOB_ID", job.as_str())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut theirs = std::process::Command::new("sleep")
            .arg("100")
            .process_group(0)
            .spawn()
            .unwrap();
        std::mem::forget(records.record(&job, ours.id() as i32).unwrap());
        let other = JobId::parse("groups-test-other").unwrap();
        std::mem::forget(records.record(&other, theirs.id() as i32).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(200));

        let killed = records.kill_leftovers().unwrap();
        assert_eq!(killed.len(), 1, "{killed:?}");
        assert_eq!(killed[0].job, job.as_str());
        assert_eq!(killed[0].processes, 2);
        assert!(ours.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(theirs.try_wait().unwrap().is_none(), "not ours: left alone");
        assert!(
            records.kill_leftovers().unwrap().is_empty(),
            "records removed"
        );
        theirs.kill().unwrap();
        theirs.wait().unwrap();
        std::fs::remove_dir_all(&data).unwrap();
    }
}
