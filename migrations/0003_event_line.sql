-- The line number of each log event: 1, 2, 3 … per job, in seq order, counting
-- every log line the job printed (a line later dropped by the log cap keeps its
-- number: the next kept line does not take it). Other kinds of events have none.
-- It lets a reader start at line N without counting the lines before it: line
-- numbers grow with seq, so `(job_id, seq)` is searched for it.
ALTER TABLE events ADD COLUMN line INTEGER;

-- 1 when a log event's payload holds a backslash (JSON's escape of a quote, a
-- backslash or a control character) or DEL: then the text a reader sees of the
-- line may differ from the payload, and a search cannot rule the line out by
-- looking for its words in the payload.
ALTER TABLE events ADD COLUMN escaped INTEGER NOT NULL DEFAULT 0;

-- Logs stored before this migration: numbered in seq order as they are now.
UPDATE events SET
    line = numbered.n,
    escaped = (instr(events.payload, '\') > 0 OR instr(events.payload, char(127)) > 0)
FROM (
    SELECT job_id, seq, row_number() OVER (PARTITION BY job_id ORDER BY seq) AS n
    FROM events WHERE kind = 'log'
) AS numbered
WHERE events.job_id = numbered.job_id AND events.seq = numbered.seq;
