-- Jobs and their event history.
-- Times are Unix milliseconds (UTC).

CREATE TABLE jobs (
    id          TEXT PRIMARY KEY NOT NULL,
    project_id  TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    status      TEXT NOT NULL,
    phase       TEXT NOT NULL,
    progress    INTEGER NOT NULL,
    message     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    -- JSON array of artifact file names.
    artifacts   TEXT NOT NULL DEFAULT '[]',
    last_seq    INTEGER NOT NULL DEFAULT 0,
    -- Names this job's history; changes if the history is recreated.
    epoch       TEXT NOT NULL
);

CREATE INDEX jobs_by_project ON jobs (project_id, created_at DESC);
CREATE INDEX jobs_by_finish ON jobs (finished_at);

-- Every recorded event of a job, by sequence number. `payload` is the exact JSON
-- clients receive; `kind` is progress, log, error or completed.
CREATE TABLE events (
    job_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
