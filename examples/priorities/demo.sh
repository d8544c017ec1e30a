#!/bin/sh
# The seed's high/low-priority story on one machine: an on-demand environment and a cheap
# interruptible (Spot-like) one behind two queues. Needs `sluice serve` running (SLUICE_SERVER,
# default http://127.0.0.1:8765) with a Docker engine and busybox:1.36. See README.md.
set -eu
SLUICE=${SLUICE:-sluice}
SECONDS_LOW=${SECONDS_LOW:-10}
run() { echo "+ sluice $*"; $SLUICE "$@"; }
json() { $SLUICE "$@" --json; }
status() { json jobs describe "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }
running() {  # running PARENT: how many of its children are RUNNING
    json jobs list --parent "$1" --status RUNNING | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))'
}
wait_for() {  # wait_for JOB: until it has ended; prints its status
    while :; do
        s=$(status "$1")
        case $s in SUCCEEDED|FAILED) echo "$1 $s"; return ;; esac
        sleep 0.5
    done
}

# capacity: what you pay for by the hour, and what the provider may take back
run environments create ondemand --max-vcpus 1 --max-memory 1073741824
run environments create spot --max-vcpus 1 --max-memory 1073741824 --interruptible
# high priority: on-demand first, and it may preempt the low queue's jobs there
run queues create high --priority 100 --environments ondemand,spot --preemption --preemption-grace 5s
# low priority: the cheap capacity first, on-demand only when it is idle
run queues create low --priority 1 --environments spot,ondemand

# a low-priority job is retried when its Spot host goes, and only then (AWS's own rule);
# it sleeps `seconds` on its first attempt and 1 s on later ones, to keep the demo short
cat > /tmp/sluice-priorities-work.json <<JSON
{"name": "work", "image": "busybox:1.36", "vcpus": 0.5, "memory": 33554432, "network": "none",
 "command": ["sh", "-c", "trap 'exit 143' TERM; [ \$AWS_BATCH_JOB_ATTEMPT = 1 ] || set -- 1; sleep \"\$1\" & wait; echo done on \$AWS_BATCH_CE_NAME", "sh", "Ref::seconds"],
 "parameters": {"seconds": "1"},
 "retry_strategy": {"attempts": 3, "evaluate_on_exit": [
     {"on_status_reason": "Host EC2*", "action": "RETRY"}, {"on_reason": "*", "action": "EXIT"}]}}
JSON
run definitions register @/tmp/sluice-priorities-work.json

low=$(json jobs submit --queue low --definition work --array-size 4 --parameters seconds="$SECONDS_LOW" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
echo "low array: $low (4 x 0.5 vCPU fill spot, then on-demand)"
until [ "$(running "$low")" = 4 ]; do sleep 0.3; done
high=$(json jobs submit --queue high --definition work --parameters seconds=1 \
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
echo "high job: $high (preempts the newest low job on on-demand, which goes back RUNNABLE)"
until [ "$(status "$high")" = RUNNING ]; do sleep 0.3; done
run environments reclaim spot          # the provider takes the cheap capacity back
wait_for "$high"
wait_for "$low"
run jobs list --parent "$low"
run environments update spot --state ENABLED
run environments list
