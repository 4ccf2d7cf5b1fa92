#!/usr/bin/env bash
# Start or stop a throw-away one-node Ceph cluster with its RADOS Gateway (an S3-compatible
# object store) on 127.0.0.1, for the tests (docs/operations.md, "S3 object storage"; what it
# takes on Debian 12: ../shared/notes/s3-ceph.md).
#
#   tests/s3/ceph.sh start STATE_DIR [--bluestore]
#                                      a monitor, one OSD on memstore (in memory; --bluestore:
#                                      on a sparse 20 GB file in STATE_DIR, written to disk as
#                                      a real cluster's are) and radosgw on free loopback
#                                      ports, everything under STATE_DIR; a user
#                                      and a bucket; prints the endpoint and writes
#                                      STATE_DIR/env (shell syntax: TELERAD_S3_ENDPOINT,
#                                      _REGION, _BUCKET, _ACCESS_KEY, _SECRET_KEY) and
#                                      STATE_DIR/s3.conf (the [archive]/[s3] settings)
#   tests/s3/ceph.sh stop STATE_DIR    stop the daemons (and make sure they are gone) and
#                                      remove STATE_DIR
#
# Authentication inside the cluster is off (auth_* = none): it listens on loopback only and
# lives for one test run. The S3 user's keys are random per cluster. Exits 77 (skipped) when
# the Ceph packages are missing: scripts/install-deps.sh --test installs them.
set -euo pipefail
cmd=${1:?start or stop}
state=${2:?state directory}
objectstore=memstore
if [[ "${3:-}" == --bluestore ]]; then
    objectstore=bluestore
fi

for tool in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do
    if ! command -v "$tool" >/dev/null; then
        echo "ceph.sh: $tool is missing (apt-get install --no-install-recommends radosgw" \
             "ceph-mon ceph-osd ceph-base)" >&2
        exit 77
    fi
done

# Is process $1 gone? A daemon whose parent is a PID 1 that does not reap leaves a zombie that
# `kill -0` still finds: a zombie counts as gone.
gone() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null || true)
    [[ -z "$st" || "$st" == Z* ]]
}

# Stop one daemon by its pid file: SIGTERM, up to 10 s, then SIGKILL. Only our daemons: the
# process's command line must name this state directory.
stop_one() {
    local f=$1 pid i
    [[ -f "$f" ]] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$state/" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        gone "$pid" && return 0
        sleep 0.05
    done
    echo "ceph.sh: $(basename "$f" .pid) ($pid) did not stop in 5 s: killed" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

# Gateway, then OSDs, then the monitor (an OSD stopped after its monitor waits for it).
stop_daemons() {
    local f
    stop_one "$state/run/client.rgw.a.pid"
    for f in "$state"/run/osd.*.pid; do
        stop_one "$f"
    done
    stop_one "$state/run/mon.a.pid"
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
    t0=$(date +%s.%N)
    if [[ -d "$state/run" ]]; then
        stop_daemons
    fi
    rm -rf "$state"
    mkdir -p "$state"/{run,log,mon,osd,rgw,tmp}
    state=$(cd "$state" && pwd)
    fsid=$(cat /proc/sys/kernel/random/uuid)
    mon_v2=$(free_port)
    mon_v1=$(free_port)
    rgw_port=$(free_port)
    while [[ "$mon_v1" == "$mon_v2" || "$rgw_port" == "$mon_v1" || "$rgw_port" == "$mon_v2" ]]; do
        mon_v1=$(free_port)
        rgw_port=$(free_port)
    done
    conf=$state/ceph.conf
    cat >"$conf" <<CONF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_v1]
mon_initial_members = a
public_addr = 127.0.0.1
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
auth_supported = none
run_dir = $state/run
admin_socket = $state/run/\$name.asok
pid_file = $state/run/\$name.pid
log_file = $state/log/\$name.log
keyring = /dev/null
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_data_avail_warn = 1
mon_data_avail_crit = 0
mon_warn_on_pool_no_redundancy = false
[mon]
mon_data = $state/mon/\$cluster-\$id
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
mon_allow_pool_delete = true
[osd]
osd_data = $state/osd/\$cluster-\$id
osd_objectstore = $objectstore
memstore_device_bytes = 4294967296
bluestore_block_path = $state/osd-block
bluestore_block_size = 21474836480
bluestore_block_create = true
bluestore_block_db_create = false
bluestore_block_wal_create = false
bluestore_fsck_on_mkfs = false
osd_max_object_size = 134217728
[client.rgw.a]
ms_mon_client_mode = crc
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
rgw_data = $state/rgw
rgw_dns_name = localhost
rgw_enable_usage_log = false
CONF
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_v1]" \
        "$state/monmap" >"$state/log/monmaptool.log" 2>&1 || { cat "$state/log/monmaptool.log" >&2; exit 1; }
    ceph-mon -c "$conf" -i a --mkfs --monmap "$state/monmap" >"$state/log/mkfs-mon.log" 2>&1 ||
        { cat "$state/log/mkfs-mon.log" >&2; exit 1; }
    ceph-mon -c "$conf" -i a >"$state/log/start-mon.log" 2>&1 ||
        { cat "$state/log/start-mon.log" "$state/log/mon.a.log" >&2; exit 1; }
    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(timeout 60 ceph -c "$conf" osd new "$uuid" 2>"$state/log/osd-new.log") ||
        { cat "$state/log/osd-new.log" "$state/log/mon.a.log" >&2; exit 1; }
    mkdir -p "$state/osd/ceph-$id"
    ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$uuid" >"$state/log/mkfs-osd.log" 2>&1 ||
        { cat "$state/log/mkfs-osd.log" >&2; exit 1; }
    ceph-osd -c "$conf" -i "$id" >"$state/log/start-osd.log" 2>&1 ||
        { cat "$state/log/start-osd.log" >&2; exit 1; }
    radosgw -c "$conf" -n client.rgw.a >"$state/log/start-rgw.log" 2>&1 ||
        { cat "$state/log/start-rgw.log" >&2; exit 1; }
    # The gateway answers once it has created its pools.
    for ((i = 0; i < 600; i++)); do
        if curl -s -o /dev/null "http://127.0.0.1:$rgw_port/"; then
            break
        fi
        sleep 0.1
    done
    if ! curl -s -o /dev/null "http://127.0.0.1:$rgw_port/"; then
        echo "ceph.sh: radosgw does not answer on 127.0.0.1:$rgw_port" >&2
        tail -n 30 "$state/log/client.rgw.a.log" >&2 || true
        exit 1
    fi
    access=$(head -c 15 /dev/urandom | base32 | tr -d '=' | head -c 20)
    secret=$(head -c 30 /dev/urandom | base64 | tr -d '=+/' | head -c 40)
    radosgw-admin -c "$conf" -n client.rgw.a user create --uid=telerad --display-name=telerad \
        --access-key="$access" --secret-key="$secret" >"$state/log/user.log" 2>&1 ||
        { cat "$state/log/user.log" >&2; exit 1; }
    endpoint="http://127.0.0.1:$rgw_port"
    bucket=telerad-test
    region=us-east-1
    # Create the bucket (a signed request: the keys work before any test relies on them).
    for ((i = 0; i < 50; i++)); do
        code=$(curl -s -o "$state/log/bucket.xml" -w '%{http_code}' -X PUT \
            --aws-sigv4 "aws:amz:$region:s3" --user "$access:$secret" \
            -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$endpoint/$bucket") || code=000
        [[ "$code" == 200 ]] && break
        sleep 0.1 # the new user can take a moment to be visible to the gateway
    done
    if [[ "$code" != 200 ]]; then
        echo "ceph.sh: cannot create bucket $bucket: HTTP $code $(cat "$state/log/bucket.xml" 2>/dev/null)" >&2
        exit 1
    fi
    umask 077
    cat >"$state/env" <<ENV
TELERAD_S3_ENDPOINT=$endpoint
TELERAD_S3_REGION=$region
TELERAD_S3_BUCKET=$bucket
TELERAD_S3_ACCESS_KEY=$access
TELERAD_S3_SECRET_KEY=$secret
ENV
    cat >"$state/s3.conf" <<CONF
[archive]
store = s3

[s3]
endpoint = $endpoint
region = $region
bucket = $bucket
access_key = $access
secret_key = $secret
CONF
    t1=$(date +%s.%N)
    printf 'Ceph %s (%s) with radosgw on %s (%s), up in %.1f s\n' \
        "$(ceph-mon --version | awk '{print $3}')" "$objectstore" "$endpoint" "$state" \
        "$(echo "$t1 - $t0" | bc)"
    ;;
stop)
    if [[ -d "$state" ]]; then
        state=$(cd "$state" && pwd)
        stop_daemons
    fi
    rm -rf "$state"
    ;;
*)
    echo "usage: ceph.sh start|stop STATE_DIR" >&2
    exit 2
    ;;
esac
