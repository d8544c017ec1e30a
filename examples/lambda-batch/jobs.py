"""Handlers of the lambda-batch example: context.sluice is the engine's API for this run."""

FRAME = {
    "image": "busybox:1.36",
    "command": ["sh", "-c", 'echo "frame $AWS_BATCH_JOB_ARRAY_INDEX"'],
    "vcpus": 0.25,
    "memory": 32 << 20,
    "network": "none",
}


def render(event, context):
    c = context.sluice
    job = c.submit_job("default", container=FRAME, array_size=event["frames"], name="frames")
    done = c.wait_job(job["job_id"], timeout_s=300)
    c.put_event("com.example.render", "Render Done", {"job": job["job_id"], "status": done["status"]})
    return {"job": job["job_id"], "status": done["status"], "frames": done["array_status_summary"]}


def bill(event, context):
    orders = event["detail"]["events"]
    return {"billed": len(orders), "total": sum(o["detail"].get("amount", 0) for o in orders)}
