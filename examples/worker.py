"""A worker that runs a (pretend) build elsewhere and streams it through buildcast.

It publishes the `{type, data}` messages of Celery-style build workers on the Redis
channel `job:<id>:updates`; every buildcast node with REDIS_URL set listens there,
one of them records the events, and every subscribed socket.io client sees them.

    pip install redis
    python examples/worker.py --redis redis://127.0.0.1:6379 --project demo --job worker-1

Without Redis, the same messages can be POSTed to /api/jobs/<id>/events with
`Authorization: Bearer $WORKER_TOKEN` (see the README).
"""

import argparse
import json
import time

import redis


def publish(r: redis.Redis, job: str, message: dict) -> None:
    r.publish(f"job:{job}:updates", json.dumps(message))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--project", default="demo")
    parser.add_argument("--job", default=f"worker-{int(time.time())}")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds between lines")
    args = parser.parse_args()

    r = redis.Redis.from_url(args.redis)
    job = args.job
    # The first message names the project (and a pipeline label for the dashboard).
    publish(r, job, {"type": "status", "data": {"status": "running"},
                     "projectId": args.project, "pipeline": "celery"})
    steps = [("initialization", "Initialization"), ("synthesis", "Synthesis"), ("report", "Report")]
    done = []
    for index, (name, label) in enumerate(steps):
        publish(r, job, {"type": "step", "data": {"step_name": name, "step_label": label}})
        for line in range(1, 6):
            publish(r, job, {"type": "log", "data": {"log_line": f"[{name}] line {line}\n"}})
            time.sleep(args.delay)
        done.append(name)
        progress = round(100 * (index + 1) / len(steps))
        publish(r, job, {"type": "progress",
                         "data": {"progress": progress, "current_step": name, "completed_steps": done}})
    publish(r, job, {"type": "complete",
                     "data": {"status": "completed", "message": "Build completed successfully"}})
    print(f"published job {job} for project {args.project}")


if __name__ == "__main__":
    main()
