# msxsync hooks, loaded into openMSX by `msxsync play` (src/openmsx/hooks.rs).
#
# What it does (docs: docs/architecture.md, "The path of one change", "Sync invariants"):
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
# - counters (`counters`: regions whose bytes are a number players add to) are flushed
#   whole, as numbers change by amounts, not bits; `apply` writes the group's value of
#   one and adds back what the game added and did not flush yet (`apply_count`), but
#   only where the game cannot be between its read and its write of the number: while
#   the CPU waits in HALT, now or at a vertical interrupt, else at the third vertical
#   interrupt or after `count_wait` anyway (`apply_counts`);
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
#   when it turns false the hooks hold at once (and push `gate 0` if it was open); when
#   it turns true a settle period starts: the gate opens only once the condition has
#   held for that many frames without a break (a game that sets its mode byte first
#   and fills in its variables a few frames later does so while the hooks still
#   hold). Then emulation pauses, `gate 1` goes out, and msxsync either writes the
#   server's state (`write_state`) or shares this player's own (`share`), which
#   activates the hooks;
# - the cartridge's INIT breakpoint stays armed: every start of the game (power-on,
#   reset) holds the hooks, pauses emulation and pushes `init`, so msxsync can decide
#   what to do before the game's start-up code clears its variables.
#
# Rust only ever calls these procs with numbers it formatted and hex it encoded.
#
# Push format (the value of msxsync_out; every push is unique because openMSX reports
# a setting only when its value changes):
#   TOKEN SEQ d REGION OFFSET OLDHEX NEWHEX [REGION OFFSET OLDHEX NEWHEX ...]
#   TOKEN SEQ n REGION OLDHEX NEWHEX [REGION OLDHEX NEWHEX ...]   (counters, whole)
#   TOKEN SEQ switched
#   TOKEN SEQ init
#   TOKEN SEQ gate 0|1
#   TOKEN SEQ wait        (the condition turned true: the settle period starts)
#   TOKEN SEQ waited N    (it turned false again after N frames of the period)
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
    variable counter          ;# array region -> {ENCODING MIN MAX} of a counter region
    array set counter {}
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
    variable settle_cap 0.001 ;# every further wait while new values keep coming
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
    variable gate_frames 0    ;# settle period: frames the condition must hold
    variable gate_waiting 0   ;# 1 while the condition holds and the period runs
    variable gate_count 0     ;# frames counted in the period so far
    variable gate_seen 0      ;# vertical interrupts seen since the last `gate_tick`
    variable gate_bp ""       ;# probe breakpoint counting frames in the period
    variable gate_gen 0       ;# number of the period; older breakpoints count nothing
    variable gate_timer ""    ;# timer counting time in the period instead (see `gate_tick`)
    variable init_pause 0     ;# 1: pause emulation when INIT is reached
    variable join_key ""      ;# key bound to `join_request`, if any
    variable boot_id ""       ;# id of our `after boot`
    variable notices {}       ;# the last notices shown, oldest first (`notice_log`)
    variable pending          ;# array region -> the group's value of a counter, not written yet
    array set pending {}
    variable pending_since "" ;# emulated time the oldest of them came; "" when none waits
    variable pending_timer "" ;# timer that writes them anyway (`count_wait`)
    variable count_frames 3   ;# vertical interrupts a counter value waits at most for a HALT
    variable count_wait 0.1   ;# emulated seconds it waits at most when none comes
    variable busy_vblanks 0   ;# vertical interrupts in a row that found values waiting and no HALT
    variable safe_counts 1    ;# 0: counters are written at once, as bytes are (tests)
    variable count_stats {0 0 0 0} ;# counter values that waited, those written without a HALT, most and all seconds waited
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
    variable dirty
    cancel_flush
    drop_counts
    foreach r [array names dirty] {
        set dirty($r) 0
    }
    # `boot` tells msxsync that the gate closed too.
    gate_close
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
# Every region is bytes until `counters` says otherwise.
proc msxsync::install {regions} {
    variable starts {}
    variable lens {}
    variable shadow
    variable dirty
    # Not `uninstall`: the INIT breakpoint and the gate stay.
    unwatch
    cancel_flush
    drop_counts
    variable polled
    variable edge_off
    variable counter
    array unset polled
    array unset edge_off
    array unset counter
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
# the start of every vertical blank; counter values waiting for a HALT look there too
# (`vblank_counts`), so the probe is there while a region is polled or is a counter.
# The VDP's interrupt is a probe that openMSX calls back for at almost no cost (under
# a microsecond a frame), while an `after time` timer costs about 13 microseconds each
# time it fires (openMSX 18, measured). At the
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
    variable vblank_check
    variable poll_id
    variable counter
    set any 0
    foreach r [array names polled] {
        if {$polled($r)} {
            set any 1
            break
        }
    }
    if {$vblank_bp eq "" && ($any || [array size counter])} {
        if {[catch {debug probe set_bp VDP.IRQvertical {} msxsync::on_vblank} id]} {
            set id ""
        }
        set vblank_bp $id
        variable vblanks 0
    }
    if {!$any || $poll_id ne "" || $vblank_check ne ""} return
    if {$vblank_bp eq ""} {
        poll_by_timer
        return
    }
    set vblank_check [after time 1.0 msxsync::check_vblank]
}

# Called on every change of the VDP's interrupt line: up at the start of the vertical
# blank, down when the CPU takes the interrupt.
proc msxsync::on_vblank {} {
    if {![debug probe read VDP.IRQvertical]} return
    variable vblanks
    incr vblanks
    variable pending
    if {[array size pending]} {
        vblank_counts
    }
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
    gate_stop_wait
    unbind_join
    cancel_flush
    drop_counts
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
# take); while new values keep coming every further wait is `settle_cap`, 1 ms, so a
# long burst (a table) costs two or three timers, not one per write. Each timer that
# fires costs openMSX a pass of its main loop, about ten system calls and four thread
# switches (openMSX 18, measured: docs/benchmarks.md), which is most of what the hooks
# cost a frame and the part that varies most between computers; an earlier rule that
# doubled the wait from 50 µs fired five timers for a 64-byte table. Writing on for
# `settle_limit` flushes anyway, so a game that never pauses still syncs.
# Why so short: a throttled openMSX emulates a few frames' worth of time in a burst,
# then sleeps (until its sound buffer has room: about 23 ms with the default 1024
# samples, 12 ms with the 512 `msxsync play` sets). A timer that ends after the burst fires only in the next one, so with a
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
        set settle_wait $settle_cap
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
    variable counter
    set out {}
    set counts {}
    for {set r 0} {$r < [llength $lens]} {incr r} {
        if {$dirty($r)} {
            set dirty($r) 0
            if {[info exists counter($r)]} {
                lappend counts {*}[diff_counter $r]
            } else {
                lappend out {*}[diff_region $r]
            }
        }
    }
    if {[llength $out]} {
        push "d $out"
    }
    if {[llength $counts]} {
        push "n $counts"
    }
}

# regions: a flat list {REGION ENCODING MIN MAX ...} naming the counters among the
# installed regions (every other region is bytes). ENCODING: bit 0 set for BCD (two
# decimal digits a byte), bit 1 for high byte first; MIN and MAX bound the value.
proc msxsync::counters {regions} {
    variable counter
    variable lens
    array unset counter
    foreach {r enc min max} $regions {
        if {$r < 0 || $r >= [llength $lens] || $min > $max} {
            error "msxsync: bad counter $r"
        }
        set counter($r) [list $enc $min $max]
    }
    arm_poll
    return [array size counter]
}

# Like `diff_region` for a counter: {} or {REGION OLDHEX NEWHEX} for the whole counter,
# so that msxsync reads the number before and after and sends the difference. The
# flush runs once the game's writes settled, so a value written a byte at a time (a
# BCD carry: low byte, then high byte) is read whole.
# With the group's value waiting to be written (`apply_counts`), RAM does not show it
# yet: the change goes out as from that value, as it would have if the value had been
# written at once, and the value waiting takes the game's amount too (the write then
# keeps only what the game adds after this flush).
proc msxsync::diff_counter {r} {
    variable starts
    variable lens
    variable shadow
    set cur [read_bytes [lindex $starts $r] [lindex $lens $r]]
    set old $shadow($r)
    if {$cur eq $old} {
        return {}
    }
    set shadow($r) $cur
    variable pending
    if {[info exists pending($r)]} {
        variable counter
        lassign $counter($r) enc min max
        set from $pending($r)
        set to [clamp [expr {$from + [count_of $enc $cur] - [count_of $enc $old]}] $min $max]
        set pending($r) $to
        set n [llength $cur]
        return [list $r [to_hex [count_bytes $enc $from $n]] [to_hex [count_bytes $enc $to $n]]]
    }
    return [list $r [to_hex $old] [to_hex $cur]]
}

# VALUE kept between MIN and MAX.
proc msxsync::clamp {value min max} {
    expr {$value < $min ? $min : ($value > $max ? $max : $value)}
}

# The number the bytes of a counter with encoding ENC hold (see `counters`). A BCD
# digit above 9 counts for its value; `counter::Counter::decode` reads them the same.
proc msxsync::count_of {enc bytes} {
    if {$enc & 2} {
        set bytes [lreverse $bytes]
    }
    set bcd [expr {$enc & 1}]
    set value 0
    set scale 1
    foreach b $bytes {
        if {$bcd} {
            set b [expr {($b >> 4) * 10 + ($b & 15)}]
        }
        set value [expr {$value + $b * $scale}]
        set scale [expr {$scale * ($bcd ? 100 : 256)}]
    }
    return $value
}

# The N bytes that hold VALUE in encoding ENC.
proc msxsync::count_bytes {enc value n} {
    set bcd [expr {$enc & 1}]
    set out {}
    for {set i 0} {$i < $n} {incr i} {
        if {$bcd} {
            set d [expr {$value % 100}]
            set value [expr {$value / 100}]
            lappend out [expr {(($d / 10) << 4) | ($d % 10)}]
        } else {
            lappend out [expr {$value & 255}]
            set value [expr {$value >> 8}]
        }
    }
    if {$enc & 2} {
        set out [lreverse $out]
    }
    return $out
}

# changes: a flat list {REGION OFFSET VALUESHEX MASKSHEX ...}. Per byte, the bits the
# game changed since the last flush (RAM xor shadow) stay as the game wrote them and
# are sent at the next flush; every masked remote bit goes into the shadow.
# counts: a flat list {REGION VALUE ...}, the group's value of counters
# (`apply_count`), written when it is safe (`apply_counts`).
proc msxsync::apply {changes {counts {}}} {
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
    apply_counts $counts
    return ok
}

# A game adds to a counter with a read-modify-write (LD A,(coins) ... LD (coins),A),
# and openMSX runs this command between any two instructions: a value written in
# between would be written over by the game's `old + 1`, and the next flush would read
# the difference as a spend, losing the others' amount. So a counter's value is
# written only where the game cannot be inside such an update: while the CPU waits in
# HALT (`cpu_waits`), its work for the frame done and the interrupt routine not
# started. When it does not wait now, the value waits (`pending`, the newest value of
# each counter: each is the group's whole value) for a vertical interrupt
# (`vblank_counts`, from the probe that is there for counters anyway), or, when none
# comes (the VDP's interrupt off), for `count_wait` of emulated time, after which it is
# written anyway. A flush meanwhile sends the game's amounts as from the value waiting
# (`diff_counter`).
proc msxsync::apply_counts {counts} {
    if {![llength $counts]} return
    variable pending
    foreach {r value} $counts {
        check_count $r $value
    }
    variable safe_counts
    if {!$safe_counts || [cpu_waits]} {
        variable busy_vblanks 0
        array set pending $counts
        write_counts 1
        return
    }
    variable pending_since
    if {$pending_since eq ""} {
        set pending_since [machine_info time]
        variable count_wait
        variable pending_timer [after time $count_wait msxsync::counts_due]
    }
    array set pending $counts
}

# Errors unless region R is a counter that can hold VALUE; returns its
# {ENCODING MIN MAX}.
proc msxsync::check_count {r value} {
    variable counter
    if {![info exists counter($r)]} {
        error "msxsync: region $r is not a counter"
    }
    lassign $counter($r) enc min max
    if {$value < $min || $value > $max} {
        error "msxsync: counter $r cannot hold $value"
    }
    return $counter($r)
}

# Whether the CPU waits in HALT. openMSX 18 keeps PC on the instruction after the HALT
# while it waits (and shows no HALT flag in "CPU regs"), so this asks whether the byte
# before PC is a HALT (0x76). An instruction that ends with a byte 0x76 (LD A,76h)
# looks the same, which at worst writes a value where it would have been written
# without the wait.
proc msxsync::cpu_waits {} {
    binary scan [debug read_block {CPU regs} 20 2] Su pc
    expr {[debug read memory [expr {($pc - 1) & 0xffff}]] == 0x76}
}

# At the start of the vertical blank, with counter values waiting. A game that waits
# for the frame in HALT is there now: they are written. A game found busy at
# `count_frames` of these in a row is taken for one that does not halt: its main loop
# busy-waits for the interrupt, or all its work runs in the interrupt routine, which
# has not started yet; either way its frame's work is done, so this is the best moment
# it offers, and its values are written here from then on, until a HALT is seen again.
# Otherwise (a game that halts but has not finished its frame's work) they wait for
# the next one, at most `count_frames` of them.
proc msxsync::vblank_counts {} {
    variable busy_vblanks
    if {[cpu_waits]} {
        set busy_vblanks 0
        write_counts 1
        return
    }
    variable count_frames
    if {[incr busy_vblanks] >= $count_frames} {
        write_counts 0
    }
}

# Writes every counter value waiting (see `apply_counts`); `halt`: while the CPU
# waits in HALT.
proc msxsync::write_counts {halt} {
    variable pending
    variable pending_since
    cancel pending_timer
    if {$pending_since ne ""} {
        variable count_stats
        lassign $count_stats waited busy most all
        set t [expr {[machine_info time] - $pending_since}]
        set count_stats [list [incr waited] [expr {$busy + !$halt}] \
            [expr {$t > $most ? $t : $most}] [expr {$all + $t}]]
        set pending_since ""
    }
    ours {
        foreach r [array names pending] {
            apply_count $r $pending($r)
        }
    }
    array unset pending
}

# `count_wait` passed without a vertical interrupt: written anyway.
proc msxsync::counts_due {} {
    variable pending_timer ""
    write_counts 0
}

# Forgets the counter values waiting: RAM is about to take the whole state, or the
# hooks hold and will be brought to the group's state before they apply again.
proc msxsync::drop_counts {} {
    variable pending
    array unset pending
    variable pending_since ""
    cancel pending_timer
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

# Writes VALUE, the group's value of counter R: the shadow takes it; RAM takes it plus
# what the game added since the last flush (RAM minus shadow, as numbers), kept in the
# counter's bounds, so that amount stays and is sent at the next flush (the counter
# form of I4). The same rule as `replica::apply_count`.
proc msxsync::apply_count {r value} {
    variable starts
    variable lens
    variable shadow
    lassign [check_count $r $value] enc min max
    set addr [lindex $starts $r]
    set n [lindex $lens $r]
    set ram [read_bytes $addr $n]
    set local [clamp [expr {$value + [count_of $enc $ram] - [count_of $enc $shadow($r)]}] \
        $min $max]
    set newram [count_bytes $enc $local $n]
    if {$newram ne $ram} {
        debug write_block memory $addr [binary format cu* $newram]
    }
    set shadow($r) [count_bytes $enc $value $n]
}

# hexes: one hex string per region, the whole region. RAM and shadow both become it;
# local changes not flushed yet are dropped (used to bring a player to the server).
proc msxsync::write_state {hexes} {
    variable starts
    variable shadow
    variable dirty
    check_state $hexes
    drop_counts
    ours {
        set r 0
        foreach hex $hexes start $starts {
            debug write_block memory $start [binary decode hex $hex]
            set shadow($r) [from_hex $hex]
            set dirty($r) 0
            incr r
        }
    }
    variable active 1
    return ok
}

# Runs script in the caller's frame with `applying` set: the watchpoints ignore these
# writes, they are ours (invariant I1). An error passes on once the flag is cleared.
proc msxsync::ours {script} {
    variable applying 1
    set failed [catch {uplevel 1 $script} msg]
    set applying 0
    if {$failed} {
        error $msg
    }
}

# Errors unless hexes holds one hex string per region, each as long as its region.
proc msxsync::check_state {hexes} {
    variable lens
    if {[llength $hexes] != [llength $lens]} {
        error "msxsync: state for [llength $hexes] regions, have [llength $lens]"
    }
    foreach hex $hexes len $lens {
        if {[string length $hex] != 2 * $len} {
            error "msxsync: state of [string length $hex] hex digits for $len bytes"
        }
    }
}

# Starts syncing with this player's own values shared, as one push: hexes is the
# server's state, one hex string per region, which becomes the shadow, so the flush
# at the end sends every bit in which RAM differs from it.
# keep_since_sync 0 (a fresh group): RAM stays as the game wrote it, so all of it that
# differs from the server's state is sent.
# keep_since_sync 1 (a restart under the shared rule): only the bits the game changed
# since this player last synced (RAM against the old shadow) stay and are sent; every
# other bit of RAM takes the server's state, with the rule of `apply` for a change
# that masks every bit (a counter: of `apply_count`, the amount the game added since
# then kept on top of the server's value). So what the others did meanwhile is not
# undone, only what this player's game changed (its new game) is shared.
proc msxsync::share {hexes keep_since_sync} {
    variable lens
    variable shadow
    variable dirty
    variable counter
    check_state $hexes
    drop_counts
    ours {
        set r 0
        foreach hex $hexes len $lens {
            if {!$keep_since_sync} {
                set shadow($r) [from_hex $hex]
            } elseif {[info exists counter($r)]} {
                apply_count $r [count_of [lindex $counter($r) 0] [from_hex $hex]]
            } else {
                apply_one $r 0 $hex [string repeat ff $len]
            }
            set dirty($r) 1
            incr r
        }
    }
    variable active 1
    flush
    return ok
}

# Stops reporting and applying (see "holding" at the top). What the game changed
# before is flushed first: it was made while syncing.
proc msxsync::hold {} {
    variable active
    if {$active} {
        flush
    }
    drop_counts
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
# `[debug read memory ADDR]` terms and numbers, built by msxsync; frames: the settle
# period. Returns the gate's current value (0 or 1); while it is closed the hooks hold.
# The gate opens once the condition has held for `frames` frames without a break
# (at once for 0); when the condition is true now, the period starts now.
# With closed 1 the gate starts closed and no period runs whatever RAM says (at the
# cartridge's INIT, RAM still holds what was there before the game started): the
# period starts at the first write that makes the condition true.
proc msxsync::gate_setup {addrs cond {closed 0} {frames 0}} {
    variable gate_addrs $addrs
    variable gate_cond $cond
    variable gate_frames $frames
    gate_watch
    gate_stop_wait
    hold
    variable gate 0
    if {!$closed && [expr $gate_cond]} {
        gate_wait_or_open
    }
    return $gate
}

# Starts the settle period, or with none, opens the gate without a push: for callers
# that tell msxsync themselves (it asks `gate_state`).
proc msxsync::gate_wait_or_open {} {
    variable gate_frames
    if {$gate_frames == 0} {
        variable gate 1
    } else {
        gate_wait
    }
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
    variable gate_waiting
    if {[expr $gate_cond]} {
        if {$gate == 0 && !$gate_waiting} {
            gate_wait
        }
    } elseif {$gate == 1} {
        gate_close
        push "gate 0"
    } elseif {$gate_waiting} {
        # Not long enough: the period starts again when the condition is back.
        variable gate_count
        push "waited $gate_count"
        gate_close
    }
}

# Closed: holds, and no settle period runs. Pushes nothing.
proc msxsync::gate_close {} {
    variable gate
    if {$gate < 0} return
    gate_stop_wait
    if {$gate == 1} {
        hold
    }
    set gate 0
}

# The condition turned true: the settle period starts (the hooks hold meanwhile).
# Frames are counted at the VDP's vertical interrupt (a probe, under a microsecond a
# frame); a timer every tenth of a second of emulated time counts five frames for
# each tenth in which no interrupt came (a game with the VDP's interrupt off, or a
# CPU that does not take it), so the period also ends for those games.
proc msxsync::gate_wait {} {
    variable gate_frames
    if {$gate_frames == 0} {
        gate_open
        return
    }
    variable gate_waiting 1
    variable gate_count 0
    variable gate_seen 0
    variable gate_bp
    variable gate_gen
    incr gate_gen
    set frame [list msxsync::gate_frame $gate_gen]
    if {[catch {debug probe set_bp VDP.IRQvertical {} $frame} id]} {
        set id ""
    }
    set gate_bp $id
    variable gate_timer [after time 0.1 msxsync::gate_tick]
    push wait
}

proc msxsync::gate_stop_wait {} {
    variable gate_waiting 0
    variable gate_gen
    incr gate_gen
    variable gate_bp
    if {$gate_bp ne ""} {
        # This may run inside that breakpoint's own callback (`gate_frame`), and
        # openMSX 18 crashes when a probe breakpoint is removed there and more Tcl
        # runs after: it goes a moment later, and counts nothing meanwhile (`gen`).
        after realtime 0 [list catch [list debug probe remove_bp $gate_bp]]
        set gate_bp ""
    }
    cancel gate_timer
}

# On every change of the VDP's interrupt line while period number `gen` runs.
proc msxsync::gate_frame {gen} {
    variable gate_gen
    if {$gen != $gate_gen || ![debug probe read VDP.IRQvertical]} return
    variable gate_seen 1
    variable gate_count
    incr gate_count
    gate_check
}

proc msxsync::gate_tick {} {
    variable gate_timer ""
    variable gate_seen
    variable gate_count
    if {!$gate_seen} {
        incr gate_count 5
    }
    set gate_seen 0
    if {![gate_check]} {
        set gate_timer [after time 0.1 msxsync::gate_tick]
    }
}

# Opens the gate when the period is over; returns whether it ended (opened, or the
# condition no longer holds: a write the watchpoints did not see).
proc msxsync::gate_check {} {
    variable gate_count
    variable gate_frames
    if {$gate_count < $gate_frames} {
        return 0
    }
    variable gate_cond
    if {![expr $gate_cond]} {
        gate_close
        return 1
    }
    gate_open
    return 1
}

# Paused until msxsync wrote the group's state or shared this player's (it resumes):
# a key the player presses right now would otherwise be undone by that write.
proc msxsync::gate_open {} {
    gate_stop_wait
    variable gate 1
    debug break
    push "gate 1"
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

# Shows a notice ("alice got the boots") with openMSX's `message`: a box on the
# screen that fades after a few seconds, and a line in the log. HEX is the text in
# UTF-8, hex-encoded by msxsync, so nothing in it is ever taken as Tcl. The last 20
# stay in `notices`, for `notice_log`.
proc msxsync::notice {hex} {
    variable notices
    set text [encoding convertfrom utf-8 [binary decode hex $hex]]
    message $text info
    lappend notices $text
    if {[llength $notices] > 20} {
        set notices [lrange $notices end-19 end]
    }
    return
}

# The last notices shown, one a line, oldest first (the boxes fade; this stays):
# type `msxsync::notice_log` in the openMSX console to read them again.
proc msxsync::notice_log {} {
    variable notices
    join $notices "\n"
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
    hold
    # The period starts again: the state may have been saved while the game was
    # starting up. `switched` tells msxsync that the gate closed.
    variable gate
    variable gate_cond
    if {$gate >= 0} {
        gate_watch
        gate_close
        if {[expr $gate_cond]} {
            gate_wait_or_open
        }
    }
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
    drop_counts
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
    hold
    # RAM is what the game left before the restart: only the game's own writes from
    # now on may open the gate again. `init` tells msxsync that it closed.
    gate_close
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
