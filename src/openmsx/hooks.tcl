# msxsync hooks, loaded into openMSX by `msxsync play` (src/openmsx/hooks.rs).
#
# What it does (docs: design.md, "Sync semantics"):
# - keeps a shadow copy of every shared RAM region: the bytes as last synced;
# - puts one write watchpoint on each region; a hit only compares the written byte with
#   the shadow and, when it differs, marks the region dirty and schedules a flush for
#   when the game has written no new value for a moment (50 µs) of emulated time (so
#   a value written in a quick burst does not travel torn, and a change leaves at once
#   instead of waiting for the next frame); a frame in which nothing changes costs
#   only the hits;
# - a flush diffs the dirty regions against the shadow, updates the shadow and pushes
#   the changed bits to msxsync through the user setting `msxsync_out`;
# - `apply` writes remote changes into RAM and shadow in one Tcl command, with a flag
#   that makes the watchpoints ignore these writes (invariant I1), and keeps the bits
#   the game changed but that were not flushed yet (invariant I4);
# - after a machine switch (loadstate, rewind, new machine) the watchpoints are gone
#   and RAM changed silently: it reinstalls them, takes the new RAM as the shadow and
#   pushes `switched` so that msxsync writes the server's state back;
# - the hooks are *active* (sending and applying) or *holding*: while holding, game
#   writes are not reported and remote changes are not applied. `write_state` makes
#   them active (the player is brought to the server's state first, then syncs);
#   `hold` stops them. Holding is what keeps a title screen, an attract demo or a
#   restarting game from wiping the group's state;
# - the sync gate (`sync-when:` in the regions file) is an expression over RAM bytes
#   that msxsync builds from numbers only; watchpoints on its bytes re-evaluate it, and
#   when it turns false the hooks hold at once and push `gate 0`; when it turns true
#   they push `gate 1` and msxsync writes the server's state (which activates them);
# - the cartridge's INIT breakpoint stays armed: every start of the game (power-on,
#   reset) holds the hooks, pauses emulation and pushes `init`, so msxsync can decide
#   what to do before the game's start-up code clears its variables.
#
# Rust only ever calls these procs with numbers it formatted and hex it encoded.
#
# Push format (the value of msxsync_out; every push is unique because openMSX reports
# a setting only when its value changes):
#   TOKEN SEQ d REGION OFFSET OLDHEX NEWHEX [REGION OFFSET OLDHEX NEWHEX ...]
#   TOKEN SEQ switched
#   TOKEN SEQ init
#   TOKEN SEQ gate 0|1
#   TOKEN SEQ join
#   TOKEN SEQ boot
# TOKEN is the number msxsync gave to `setup` (it tells this session's pushes from a
# stale value), SEQ counts pushes, REGION and OFFSET are decimal, the hex strings hold
# one byte per two digits.

# Loading the script again must not leave the previous watchpoints behind.
if {[info procs ::msxsync::uninstall] ne ""} {
    catch {::msxsync::uninstall}
}

namespace eval msxsync {
    variable token 0          ;# session number, first word of every push
    variable seq 0            ;# push counter
    variable new_api 0        ;# 1: openMSX >= 21 `debug watchpoint create`
    variable starts {}        ;# per region: first CPU address
    variable lens {}          ;# per region: number of bytes
    variable shadow           ;# array region -> list of byte values as last synced
    array set shadow {}
    variable dirty            ;# array region -> 1 when a hit saw a new value
    array set dirty {}
    variable wp               ;# array region -> id of its write watchpoint
    array set wp {}
    variable hits             ;# array region -> watchpoint hits since the last review
    array set hits {}
    variable polled           ;# array region -> 1: compared, not watched (see `arm_poll`)
    array set polled {}
    variable edge             ;# array region -> watchpoint on the last byte of a polled region
    array set edge {}
    variable edge_hits        ;# array region -> hits of that watchpoint since the last review
    array set edge_hits {}
    variable edge_off         ;# array region -> 1: its last byte is busy too, not watched
    array set edge_off {}
    variable edge_busy_hits 200 ;# hits in a second of emulated time that drop it
    variable busy_hits 500    ;# hits in a second of emulated time that make a region polled
    variable vblank_bp ""     ;# probe breakpoint on the VDP's vertical interrupt
    variable vblanks 0        ;# vertical interrupts seen since the last check
    variable vblank_check ""  ;# timer of the next check that they still come
    variable poll_id ""       ;# timer of the next comparison, when not at VBLANK
    variable review_id ""     ;# timer of the next review of hit counts
    variable applying 0       ;# 1 while we write RAM ourselves: hits are ours, ignore
    variable flush_pending 0  ;# 1 while a flush is scheduled
    variable auto_flush 1     ;# 0: flush only when asked (tests)
    variable backstop ""      ;# timer of the next settle check
    variable changes 0        ;# hits that saw a new value (only compared, may wrap)
    variable settled 0        ;# `changes` at the last settle check
    variable settle_time 0.00005 ;# first wait (emulated s) for more new values (see `schedule_flush`)
    variable settle_cap 0.001 ;# longest wait: it doubles while new values keep coming
    variable settle_limit 0.02 ;# emulated seconds of waiting before flushing anyway
    variable settle_wait 0    ;# the current wait
    variable settle_spent 0   ;# waited since the flush was scheduled
    variable switch_id ""     ;# id of our `after machine_switch`
    variable init_bp ""       ;# id of the cartridge INIT breakpoint
    variable machine_id ""    ;# the machine the watchpoints are on
    variable active 1         ;# 0: holding, game writes are not reported (see above)
    variable gate -1          ;# sync gate: -1 none, 0 closed, 1 open
    variable gate_cond ""     ;# the gate expression (numbers only, built by msxsync)
    variable gate_addrs {}    ;# the bytes the gate reads
    variable gate_wps {}      ;# watchpoints on those bytes
    variable init_pause 0     ;# 1: pause emulation when INIT is reached
    variable join_key ""      ;# key bound to `join_request`, if any
    variable boot_id ""       ;# id of our `after boot`
}

# Creates the push channel. The setting may exist with a stale value (openMSX saves
# user settings on exit and brings them back), so the value is reset here and every
# push carries the session token.
proc msxsync::setup {tok api} {
    variable token $tok
    variable new_api $api
    if {"msxsync_out" ni [user_setting info]} {
        user_setting create string msxsync_out "msxsync: data from the hooks to msxsync play" ""
    }
    set ::msxsync_out ""
    openmsx_update enable setting
    arm_boot
    return ok
}

# Power-on and reset re-initialise RAM without any watchpoint hit, and the BIOS then
# writes all over it: hold at once (dropping what was not flushed: RAM is not the
# game's any more) until the cartridge's INIT, where msxsync decides again.
proc msxsync::arm_boot {} {
    cancel boot_id
    variable boot_id [after boot msxsync::on_boot]
}

# Cancels the `after` whose id the namespace variable VAR holds, if any, and clears it.
proc msxsync::cancel {var} {
    variable $var
    if {[set $var] ne ""} {
        catch {after cancel [set $var]}
        set $var ""
    }
}

proc msxsync::on_boot {} {
    variable boot_id ""
    variable active 0
    variable gate
    variable dirty
    cancel_flush
    foreach r [array names dirty] {
        set dirty($r) 0
    }
    if {$gate > 0} {
        set gate 0
        push "gate 0"
    }
    push boot
    arm_boot
}

proc msxsync::push {text} {
    variable token
    variable seq
    incr seq
    set ::msxsync_out "$token $seq $text"
}

proc msxsync::read_bytes {addr n} {
    binary scan [debug read_block memory $addr $n] cu* bytes
    return $bytes
}

proc msxsync::to_hex {bytes} {
    return [binary encode hex [binary format cu* $bytes]]
}

proc msxsync::from_hex {hex} {
    binary scan [binary decode hex $hex] cu* bytes
    return $bytes
}

# regions: a flat list {START LEN START LEN ...}. The shadow starts as the current RAM.
proc msxsync::install {regions} {
    variable starts {}
    variable lens {}
    variable shadow
    variable dirty
    # Not `uninstall`: the INIT breakpoint and the gate stay.
    unwatch
    cancel_flush
    variable polled
    variable edge_off
    array unset polled
    array unset edge_off
    array unset shadow
    array unset dirty
    set r 0
    foreach {start len} $regions {
        lappend starts $start
        lappend lens $len
        set shadow($r) [read_bytes $start $len]
        set dirty($r) 0
        set polled($r) 0
        incr r
    }
    watch
    arm_switch
    variable active 1
    return $r
}

# Watches every region, except the busy ones, which are compared instead (see
# `arm_poll`): a watchpoint costs about a microsecond per write, and a game that
# rewrites a table every frame, or one byte in a loop, would pay that for every write.
# Which regions are busy is learnt from the hit counts (see `review`).
proc msxsync::watch {} {
    variable machine_id [machine]
    variable starts
    variable lens
    variable wp
    variable hits
    variable edge_hits
    variable polled
    set r 0
    foreach start $starts len $lens {
        set hits($r) 0
        set edge_hits($r) 0
        if {$polled($r)} {
            arm_edge $r
        } else {
            set wp($r) [create_watchpoint $start [expr {$start + $len - 1}] \
                [list msxsync::hit $r $start]]
        }
        incr r
    }
    arm_poll
    arm_review
}

# A write watchpoint on FIRST..LAST (CPU addresses) running CMD, in the syntax of this
# openMSX; returns its id.
proc msxsync::create_watchpoint {first last cmd} {
    variable new_api
    set range [list $first $last]
    if {$new_api} {
        return [debug watchpoint create -type write_mem -address $range -command $cmd]
    }
    return [debug set_watchpoint write_mem $range {} $cmd]
}

# A game rewrites a table first byte to last, so a write of a polled region's last
# byte usually ends its update: one watchpoint there (one hit a frame for a table
# rewritten every frame) lets the comparison run at that moment, and the change leaves
# at once instead of at the next vertical blank. When the last byte is itself written
# often (a counter in a loop), `review` drops the watchpoint for good.
proc msxsync::arm_edge {r} {
    variable edge
    variable edge_off
    variable starts
    variable lens
    set len [lindex $lens $r]
    if {$len < 2 || [info exists edge($r)] || [info exists edge_off($r)]} return
    set last [expr {[lindex $starts $r] + $len - 1}]
    set edge($r) [create_watchpoint $last $last [list msxsync::edge_hit $r]]
}

# The watchpoint on a polled region's last byte: compare the region now.
proc msxsync::edge_hit {r} {
    variable applying
    variable active
    if {$applying || !$active} return
    variable edge_hits
    incr edge_hits($r)
    variable flush_pending
    if {[compare $r] && !$flush_pending} {
        flush
    }
}

# Marks region R dirty when its RAM differs from its shadow; returns whether it does.
proc msxsync::compare {r} {
    variable starts
    variable lens
    variable shadow
    if {[debug read_block memory [lindex $starts $r] [lindex $lens $r]]
            eq [binary format cu* $shadow($r)]} {
        return 0
    }
    variable dirty
    set dirty($r) 1
    variable changes
    incr changes
    return 1
}

proc msxsync::unwatch {} {
    variable wp
    variable edge
    foreach r [array names wp] {
        remove_watchpoints [list $wp($r)]
    }
    foreach r [array names edge] {
        remove_watchpoints [list $edge($r)]
    }
    array unset wp
    array unset edge
    foreach timer {poll_id review_id vblank_check} {
        cancel $timer
    }
    variable vblank_bp
    if {$vblank_bp ne ""} {
        catch {debug probe remove_bp $vblank_bp}
        set vblank_bp ""
    }
}

# Once a second of emulated time: a watched region written more than `busy_hits`
# times in it becomes polled (for good: polling a region costs little), and a polled
# region's last byte written more than `edge_busy_hits` times loses its watchpoint.
proc msxsync::review {} {
    variable review_id ""
    variable hits
    variable edge_hits
    variable polled
    variable wp
    variable edge
    variable edge_off
    variable busy_hits
    variable edge_busy_hits
    foreach r [array names hits] {
        if {!$polled($r) && $hits($r) > $busy_hits} {
            set polled($r) 1
            remove_watchpoints [list $wp($r)]
            unset wp($r)
            arm_edge $r
        } elseif {[info exists edge($r)] && $edge_hits($r) > $edge_busy_hits} {
            remove_watchpoints [list $edge($r)]
            unset edge($r)
            set edge_off($r) 1
        }
        set hits($r) 0
        set edge_hits($r) 0
    }
    arm_poll
    arm_review
}

proc msxsync::arm_review {} {
    variable review_id
    variable wp
    variable edge
    if {$review_id eq "" && ([array size wp] || [array size edge])} {
        set review_id [after time 1.0 msxsync::review]
    }
}

# Polled regions are compared when their last byte is written (see `arm_edge`) and at
# the start of every vertical blank. The VDP's interrupt is a probe that openMSX calls
# back for at almost no cost (under a microsecond a frame), while an `after time` timer
# costs about 13 microseconds each time it fires (openMSX 18, measured). At the
# vertical blank a game has finished the frame's work and waits for the interrupt, so
# what either comparison finds is flushed at once, without the settle wait (which would
# cost a timer). A game that writes a table last byte first can have it caught
# half-written at the last-byte write; the rest follows at the vertical blank. A game
# that switches the VDP's interrupt off (or an openMSX without the probe) is compared
# by a timer instead, about once a frame and with the settle wait; a check once a
# second of emulated time notices the interrupt stopping or coming back.
proc msxsync::arm_poll {} {
    variable polled
    variable vblank_bp
    variable poll_id
    set any 0
    foreach r [array names polled] {
        if {$polled($r)} {
            set any 1
            break
        }
    }
    if {!$any || $vblank_bp ne "" || $poll_id ne ""} return
    if {[catch {debug probe set_bp VDP.IRQvertical {} msxsync::on_vblank} id]} {
        poll_by_timer
        return
    }
    set vblank_bp $id
    variable vblanks 0
    variable vblank_check [after time 1.0 msxsync::check_vblank]
}

# Called on every change of the VDP's interrupt line: up at the start of the vertical
# blank, down when the CPU takes the interrupt.
proc msxsync::on_vblank {} {
    if {![debug probe read VDP.IRQvertical]} return
    variable vblanks
    incr vblanks
    variable poll_id
    if {$poll_id eq ""} {
        poll 1
    }
}

proc msxsync::check_vblank {} {
    variable vblanks
    variable poll_id
    if {$vblanks == 0} {
        if {$poll_id eq ""} {
            poll_by_timer
        }
    } else {
        cancel poll_id
    }
    set vblanks 0
    variable vblank_check [after time 1.0 msxsync::check_vblank]
}

proc msxsync::poll_by_timer {} {
    variable poll_id [after time 0.02 msxsync::poll_by_timer]
    poll 0
}

# A polled region that differs from its shadow is dirty. `now`: flush it at once (at
# the vertical blank, see above); else after the settle wait.
proc msxsync::poll {now} {
    variable active
    if {!$active} return
    variable polled
    set found 0
    foreach r [array names polled] {
        if {$polled($r) && [compare $r]} {
            set found 1
        }
    }
    variable flush_pending
    if {$found && !$flush_pending} {
        if {$now} {
            flush
        } else {
            schedule_flush
        }
    }
}

proc msxsync::remove_watchpoints {ids} {
    variable new_api
    foreach id $ids {
        if {$new_api} {
            catch {debug watchpoint remove $id}
        } else {
            catch {debug remove_watchpoint $id}
        }
    }
}

proc msxsync::arm_switch {} {
    cancel switch_id
    variable switch_id [after machine_switch msxsync::on_switch]
}

proc msxsync::uninstall {} {
    cancel boot_id
    unwatch
    gate_unwatch
    unbind_join
    cancel_flush
    cancel switch_id
    disarm_init
}

# The watchpoint callback: runs after every CPU write into a region. Keep it tiny.
proc msxsync::hit {r start} {
    variable applying
    variable active
    if {$applying || !$active} return
    variable hits
    incr hits($r)
    variable shadow
    if {[lindex $shadow($r) [expr {$::wp_last_address - $start}]] != $::wp_last_value} {
        variable dirty
        set dirty($r) 1
        variable changes
        incr changes
        variable flush_pending
        if {!$flush_pending} {
            schedule_flush
        }
    }
}

# A flush waits until the game has written no new value for a moment of emulated time:
# a game updates a multi-byte value or a table in a quick burst of writes, and sending
# it half-written would show the others a torn value. The first wait is `settle_time`,
# 50 µs (179 Z80 T-states, a few dozen instructions: longer than the writes of one value
# take); while new values keep coming it doubles, up to `settle_cap`, so a long burst
# costs a few timers (each about 13 µs), not one per write. Writing on for
# `settle_limit` flushes anyway, so a game that never pauses still syncs.
# Why so short: a throttled openMSX emulates a few frames' worth of time in a burst,
# then sleeps (until its sound buffer has room: about 23 ms with the default 1024
# samples). A timer that ends after the burst fires only in the next one, so with a
# 1 ms wait about one change in 200 left a whole burst later (docs/benchmarks.md).
proc msxsync::schedule_flush {} {
    variable flush_pending 1
    variable auto_flush
    if {!$auto_flush} return
    variable changes
    variable settled $changes
    variable settle_time
    variable settle_wait $settle_time
    variable settle_spent $settle_time
    variable backstop [after time $settle_wait msxsync::settle]
}

proc msxsync::settle {} {
    variable changes
    variable settled
    variable settle_wait
    variable settle_spent
    variable settle_limit
    variable backstop ""
    if {$changes != $settled && $settle_spent < $settle_limit} {
        set settled $changes
        variable settle_cap
        # (openMSX's Tcl has no min())
        set settle_wait [expr {2 * $settle_wait < $settle_cap ? 2 * $settle_wait : $settle_cap}]
        set settle_spent [expr {$settle_spent + $settle_wait}]
        set backstop [after time $settle_wait msxsync::settle]
        return
    }
    flush
}

proc msxsync::cancel_flush {} {
    variable flush_pending 0
    cancel backstop
}

# Diffs one region against its shadow and updates the shadow. Returns {} or
# {REGION OFFSET OLDHEX NEWHEX} for the span from the first to the last changed byte;
# msxsync turns that into bit-masked changes. The span is found with a few C-speed
# string comparisons instead of a Tcl loop over every byte.
proc msxsync::diff_region {r} {
    variable starts
    variable lens
    variable shadow
    set cur [debug read_block memory [lindex $starts $r] [lindex $lens $r]]
    set old [binary format cu* $shadow($r)]
    if {$cur eq $old} {
        return {}
    }
    binary scan $cur cu* shadow($r)
    set lo 0
    set hi [string length $cur]
    while {$lo < $hi} {
        set mid [expr {($lo + $hi) / 2}]
        if {[string equal -length [expr {$mid + 1}] $cur $old]} {
            set lo [expr {$mid + 1}]
        } else {
            set hi $mid
        }
    }
    set first $lo
    set hi [expr {[string length $cur] - 1}]
    while {$lo < $hi} {
        set mid [expr {($lo + $hi + 1) / 2}]
        if {[string range $cur $mid end] eq [string range $old $mid end]} {
            set hi [expr {$mid - 1}]
        } else {
            set lo $mid
        }
    }
    return [list $r $first [binary encode hex [string range $old $first $lo]] \
        [binary encode hex [string range $cur $first $lo]]]
}

proc msxsync::flush {} {
    cancel_flush
    variable dirty
    variable lens
    set out {}
    for {set r 0} {$r < [llength $lens]} {incr r} {
        if {$dirty($r)} {
            set dirty($r) 0
            lappend out {*}[diff_region $r]
        }
    }
    if {[llength $out]} {
        push "d $out"
    }
}

# changes: a flat list {REGION OFFSET VALUESHEX MASKSHEX ...}. Per byte, the bits the
# game changed since the last flush (RAM xor shadow) stay as the game wrote them and
# are sent at the next flush; every masked remote bit goes into the shadow.
proc msxsync::apply {changes} {
    variable active
    if {!$active} {
        return held
    }
    variable applying 1
    set failed [catch {
        foreach {r off vhex mhex} $changes {
            apply_one $r $off $vhex $mhex
        }
    } msg]
    set applying 0
    if {$failed} {
        error $msg
    }
    return ok
}

proc msxsync::apply_one {r off vhex mhex} {
    variable starts
    variable lens
    variable shadow
    set vals [from_hex $vhex]
    set masks [from_hex $mhex]
    set n [llength $vals]
    if {$r < 0 || $r >= [llength $lens] || $n == 0 || $n != [llength $masks]
            || $off < 0 || $off + $n > [lindex $lens $r]} {
        error "msxsync: bad change to region $r at $off"
    }
    set addr [expr {[lindex $starts $r] + $off}]
    set last [expr {$off + $n - 1}]
    set ram [read_bytes $addr $n]
    set newram {}
    set newshadow {}
    foreach b $ram s [lrange $shadow($r) $off $last] v $vals m $masks {
        set take [expr {$m & ~($b ^ $s) & 0xff}]
        lappend newram [expr {($b & ~$take & 0xff) | ($v & $take)}]
        lappend newshadow [expr {($s & ~$m & 0xff) | ($v & $m)}]
    }
    if {$newram ne $ram} {
        debug write_block memory $addr [binary format cu* $newram]
    }
    set shadow($r) [lreplace $shadow($r) $off $last {*}$newshadow]
}

# hexes: one hex string per region, the whole region. RAM and shadow both become it;
# local changes not flushed yet are dropped (used to bring a player to the server).
proc msxsync::write_state {hexes} {
    variable starts
    variable lens
    variable shadow
    variable dirty
    if {[llength $hexes] != [llength $lens]} {
        error "msxsync: state for [llength $hexes] regions, have [llength $lens]"
    }
    foreach hex $hexes len $lens {
        if {[string length $hex] != 2 * $len} {
            error "msxsync: state of [string length $hex] hex digits for $len bytes"
        }
    }
    variable applying 1
    set failed [catch {
        set r 0
        foreach hex $hexes start $starts {
            debug write_block memory $start [binary decode hex $hex]
            set shadow($r) [from_hex $hex]
            set dirty($r) 0
            incr r
        }
    } msg]
    set applying 0
    if {$failed} {
        error $msg
    }
    variable active 1
    return ok
}

# Stops reporting and applying (see "holding" at the top). What the game changed
# before is flushed first: it was made while syncing.
proc msxsync::hold {} {
    variable active
    if {$active} {
        flush
    }
    set active 0
    return ok
}

# Whether the hooks are active (1) or holding (0).
proc msxsync::is_active {} {
    variable active
    return $active
}

# changes: a flat list {REGION OFFSET VALUESHEX ...}: writes these bytes into RAM and
# shadow whatever the game did to them. Used to repair bytes that changed behind the
# watchpoints' back (a write to "Main RAM", a cheat), found by msxsync's desync check.
proc msxsync::force {changes} {
    variable starts
    variable lens
    variable shadow
    variable applying 1
    set failed [catch {
        foreach {r off vhex} $changes {
            set vals [from_hex $vhex]
            set n [llength $vals]
            if {$r < 0 || $r >= [llength $lens] || $n == 0 || $off < 0
                    || $off + $n > [lindex $lens $r]} {
                error "msxsync: bad repair of region $r at $off"
            }
            debug write_block memory [expr {[lindex $starts $r] + $off}] \
                [binary decode hex $vhex]
            set shadow($r) [lreplace $shadow($r) $off [expr {$off + $n - 1}] {*}$vals]
        }
    } msg]
    set applying 0
    if {$failed} {
        error $msg
    }
    return ok
}

# The sync gate. addrs: the bytes the condition reads; cond: a Tcl expression over
# `[debug read memory ADDR]` terms and numbers, built by msxsync. Returns the gate's
# current value (0 or 1); while it is closed the hooks hold.
# With closed 1 the gate starts closed whatever RAM says (at the cartridge's INIT, RAM
# still holds what was there before the game started), and opens at the first write
# that makes the condition true.
proc msxsync::gate_setup {addrs cond {closed 0}} {
    variable gate_addrs $addrs
    variable gate_cond $cond
    gate_watch
    variable gate [expr {$closed ? 0 : [expr $gate_cond]}]
    if {!$gate} {
        hold
    }
    return $gate
}

proc msxsync::gate_watch {} {
    variable gate_addrs
    variable gate_wps
    gate_unwatch
    foreach addr $gate_addrs {
        lappend gate_wps [create_watchpoint $addr $addr msxsync::gate_hit]
    }
}

proc msxsync::gate_unwatch {} {
    variable gate_wps
    remove_watchpoints $gate_wps
    set gate_wps {}
}

# Runs after every write to a byte the gate reads: cheap unless the value flips.
proc msxsync::gate_hit {} {
    variable gate
    variable gate_cond
    set now [expr $gate_cond]
    if {$now != $gate} {
        set gate $now
        if {$now} {
            # Paused until msxsync wrote the group's state (it resumes): a key the
            # player presses right now would otherwise be undone by that write.
            debug break
        } else {
            hold
        }
        push "gate $now"
    }
}

# The gate: -1 when there is none, else 0 (closed) or 1 (open).
proc msxsync::gate_state {} {
    variable gate
    return $gate
}

# Binds KEY (a key name msxsync chose, e.g. F12) so that pressing it pushes `join`.
proc msxsync::bind_join {key} {
    variable join_key
    unbind_join
    bind $key msxsync::join_request
    set join_key $key
    return ok
}

proc msxsync::unbind_join {} {
    variable join_key
    if {$join_key ne ""} {
        catch {unbind $join_key}
        set join_key ""
    }
}

proc msxsync::join_request {} {
    # Paused until msxsync wrote the group's state (it resumes).
    debug break
    push join
}

# Continues emulation if the hooks paused it (at INIT); harmless otherwise.
proc msxsync::resume {} {
    if {[debug breaked]} {
        debug cont
    }
    return ok
}

# The current RAM of every region, one hex string per region.
proc msxsync::read {} {
    variable starts
    variable lens
    set out {}
    foreach start $starts len $lens {
        lappend out [binary encode hex [debug read_block memory $start $len]]
    }
    return $out
}

# The shadow of every region, one hex string per region (for tests).
proc msxsync::read_shadow {} {
    variable shadow
    variable lens
    set out {}
    for {set r 0} {$r < [llength $lens]} {incr r} {
        lappend out [to_hex $shadow($r)]
    }
    return $out
}

# Loadstate, rewind or a machine change: our watchpoints went with the old machine and
# RAM changed without any hit. Watch again, take RAM as the shadow (what the state
# holds is not a change this player made) and tell msxsync, which writes the server's
# state back.
proc msxsync::on_switch {} {
    variable switch_id ""
    variable machine_id
    # An `after machine_switch` added while openMSX runs the machine_switch callbacks
    # runs in the same round, so this proc can be called twice for one switch.
    if {[machine] eq $machine_id} {
        arm_switch
        return
    }
    reinstall
    variable gate
    variable gate_cond
    if {$gate >= 0} {
        gate_watch
        set gate [expr $gate_cond]
    }
    hold
    # Paused until msxsync brought the shared regions back (it resumes).
    debug break
    push switched
}

proc msxsync::reinstall {} {
    variable starts
    variable lens
    variable shadow
    variable dirty
    cancel_flush
    unwatch
    set r 0
    foreach start $starts len $lens {
        set shadow($r) [read_bytes $start $len]
        set dirty($r) 0
        incr r
    }
    watch
    arm_switch
    return $r
}

# Pushes `init` once the CPU reaches ADDR (the cartridge's INIT) while the four header
# bytes H0..H3 are visible at 0x4000, so BIOS code at the same address does not count.
proc msxsync::arm_init {addr h0 h1 h2 h3 {pause 0}} {
    variable init_bp
    variable init_pause $pause
    disarm_init
    set cond "\[msxsync::header_is $h0 $h1 $h2 $h3\]"
    set init_bp [debug set_bp $addr $cond msxsync::init_hit]
    return $init_bp
}

proc msxsync::header_is {h0 h1 h2 h3} {
    binary scan [debug read_block memory 0x4000 4] cu* got
    return [expr {$got eq [list $h0 $h1 $h2 $h3]}]
}

# The game (re)starts: power-on or reset. The breakpoint stays for the next start.
proc msxsync::init_hit {} {
    variable init_pause
    variable gate
    hold
    if {$gate > 0} {
        # RAM is what the game left before the restart: only the game's own writes
        # from now on may open the gate again.
        set gate 0
        push "gate 0"
    }
    if {$init_pause} {
        debug break
    }
    push init
}

proc msxsync::disarm_init {} {
    variable init_bp
    if {$init_bp ne ""} {
        catch {debug remove_bp $init_bp}
        set init_bp ""
    }
}
