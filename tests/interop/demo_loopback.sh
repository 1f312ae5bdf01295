# SPDX-License-Identifier: MIT
# The README's first command: uvhost-demo with no arguments forks a
# back-end on a temporary socket and connects its front-end to it.
. "$(dirname "$0")/lib.sh"

need_demo
t_setup
LOG=$T_WORK/demo.log

"$UVHOST_DEMO" > "$LOG" 2>&1
rc=$?
check "uvhost-demo exits 0 (status $rc)" test "$rc" = 0
check "front-end negotiated VERSION_1" has "$LOG" '^frontend: negotiated features .* VERSION_1'
check "front-end negotiated REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS, STATUS" \
	has "$LOG" '^frontend: negotiated protocol features .*REPLY_ACK.*CONFIG CONFIGURE_MEM_SLOTS STATUS'
check "front-end read the config space (link up)" \
	has "$LOG" '^frontend: config: mac 02:75:76:68:00:01 status 0x1 \(link up\)'
check "regions added with ADD_MEM_REG" \
	test "$(count "$LOG" '^backend: request ADD_MEM_REG')" = 2
check "back-end honoured mmap_offset" has "$LOG" '^backend:   region 1: .* mmap_offset 0x10000 -> mapped'
check "vring 0 started" has "$LOG" '^backend: ready: vring 0 started'
check "vring 1 started" has "$LOG" '^backend: ready: vring 1 started'
check "kicks reached the back-end" has "$LOG" '^backend: connection summary: vrings started: 2 of 2, kicks 2'
check "DRIVER_OK reached the back-end" has "$LOG" '^backend:   status 0x0f .*DRIVER_OK'
check "no request refused" has "$LOG" '^backend: connection summary: [0-9]+ requests, 0 refused'
check "demo complete" has "$LOG" 'demo complete'

"$UVHOST_DEMO" --queues 2 > "$T_WORK/q2.log" 2>&1
rc=$?
check "--queues 2: exits 0 (status $rc)" test "$rc" = 0
check "--queues 2: the back-end reports 2 queue pairs" has "$T_WORK/q2.log" '^frontend: back-end queues: 2$'
check "--queues 2: four vrings started" \
	has "$T_WORK/q2.log" '^backend: connection summary: vrings started: 4 of 4, kicks 4'

"$UVHOST_DEMO" --help > "$T_WORK/help.log" 2>&1
check "--help exits 0" test $? = 0
"$UVHOST_DEMO" --queues 0 > "$T_WORK/usage.log" 2>&1
check "a bad option exits 2" test $? = 2
"$UVHOST_DEMO" --connect "$T_WORK/nothing.sock" --timeout 0 > "$T_WORK/noconn.log" 2>&1
rc=$?
check "--connect to no back-end fails with status 1 (status $rc)" test "$rc" = 1
check "--connect to no back-end says why" has "$T_WORK/noconn.log" '^frontend: error: connect: '

t_finish
