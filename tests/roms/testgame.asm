; msxsync test cartridge: a tiny "game" that tests drive through a mailbox.
;
; Build: make roms   (pasmo --bin tests/roms/testgame.asm tests/roms/testgame.rom)
; Runs on C-BIOS_MSX1 (any MSX): a 16 KiB ROM at 0x4000 with the "AB" header.
;
; Like a real game it clears its variables at start-up, then runs one step per frame
; (EI/HALT on the VDP interrupt). Tests poke the mailbox with debug writes (which the
; game never writes), and the game performs the command with CPU writes, so a test can
; make the game itself change exactly the bits it wants.
;
; RAM map (keep tests/common/testrom.rs in sync):
;   0xE000-0xE00F  shared region 0 (16 bytes); 0xE00F is the stress byte
;   0xE010-0xE04F  shared region 1 (64 bytes), the target of the every-frame modes
;   0xE050-0xE051  shared counter: 4 BCD digits, low byte first (commands 9 and 10)
;   0xE052         shared counter: one binary byte, at most 200
;   0xE100         mailbox: sequence; the game acts when it differs from 0xE110
;   0xE101         mailbox: command (see below)
;   0xE102-0xE103  mailbox: target address (little endian)
;   0xE104         mailbox: operand
;   0xE110         private: last mailbox sequence seen
;   0xE111         private: acknowledge, set to the sequence once a command was done
;   0xE120-0xE121  private: frame counter, +1 every frame (little endian)
;   0xE122         private: game mode, 0 = title, 1 = playing, 2 = game over
;   0xE123         private: every-frame mode (see command 5)
;   0xE124         private: value counter of every-frame mode 1
;   0xE125         private: pattern of the new game being set up (command 7), 0 = none
;   0xE126         private: frames since that new game started, 1 in its first frame
;   0xE128         private: BCD increments of command 9 still to do
;   0xE129-0xE12A  private: their target address (little endian)
;   0xE12B         private: 1 when those increments are slow ones (command 11)
;   0xE12F         private: 0x5A once start-up is done and the main loop runs
;
; Commands (mailbox 0xE101), T = target address, V = operand:
;   1 set:     (T) = V
;   2 or:      (T) = (T) OR V
;   3 and-not: (T) = (T) AND NOT V
;   4 add:     (T) = (T) + V
;   5 every-frame mode = V: 0 none; 1 rewrite region 1 with changing values each
;     frame; 2 rewrite region 1 with its own (unchanged) values each frame;
;     3 stress: write 0xE00F with its own value 1536 times each frame
;   6 game mode = V (0 title, 1 playing, 2 game over)
;   7 new game with start-up pattern V, like a real game's new-game routine: game mode
;     = 1 at once (in the frame of the command), then the shared variables
;     0xE000-0xE04F are set up as pattern V says:
;     1 cleared in the same frame; 2 cleared one frame later; 3 cleared ten frames
;     later; 4 cleared over five frames, 16 bytes a frame from the same frame on;
;     5 one frame later, starting values copied from ROM: 0xE000 = 3 (lives),
;     0xE001 = 1 (a first weapon), the rest 0. The counters (0xE050-0xE052) stay.
;     0xE125 reads 0 again once the variables are set up.
;   9 count:   add 1 to the 4-digit BCD number at T (low byte first, carry written
;     second) once per frame, V times, as a game collecting coins as fast as it can;
;     the acknowledge comes at once, 0xE128 reaches 0 when the last one is done
;  10 spend:   (T) = (T) - V as 4-digit BCD, V a BCD byte (0x15 is 15)
;  11 slow count: as 9, but each increment reads the number, runs a busy loop of about
;     7 ms (no HALT: the CPU is busy, as a game computing between its read and its
;     write) and then writes what it read + 1: a read-modify-write with a wide window

SHARED0     equ 0E000h
SHARED1     equ 0E010h
SHARED1_LEN equ 64
STRESS      equ 0E00Fh
MB_SEQ      equ 0E100h
MB_CMD      equ 0E101h
MB_ADDR     equ 0E102h
MB_VAL      equ 0E104h
LAST_SEQ    equ 0E110h
ACK         equ 0E111h
FRAMES      equ 0E120h
MODE        equ 0E122h
EF_MODE     equ 0E123h
EF_COUNT    equ 0E124h
NG_PATTERN  equ 0E125h
NG_STEP     equ 0E126h
SHARED_LEN  equ 80
COUNT_LEFT  equ 0E128h
COUNT_ADDR  equ 0E129h
COUNT_SLOW  equ 0E12Bh
READY       equ 0E12Fh
CLEAR_START equ 0E000h
CLEAR_LEN   equ 0130h

        org 4000h
        db "AB"
        dw init
        dw 0, 0, 0, 0, 0, 0

init:
        di
        ld sp, 0F380h
        ; Clear shared, mailbox and private variables, as games do at start-up.
        ld hl, CLEAR_START
        ld de, CLEAR_START + 1
        ld bc, CLEAR_LEN - 1
        ld (hl), 0
        ldir
        ld a, 5Ah
        ld (READY), a
        ei
main_loop:
        halt
        call frame
        jr main_loop

frame:
        ld hl, (FRAMES)
        inc hl
        ld (FRAMES), hl
        ld a, (MB_SEQ)
        ld hl, LAST_SEQ
        cp (hl)
        jr z, every_frame
        ld (hl), a
        call command
        ld a, (LAST_SEQ)
        ld (ACK), a
every_frame:
        call new_game_step
        call count_step
        ld a, (EF_MODE)
        cp 1
        jr z, ef_changing
        cp 2
        jr z, ef_unchanged
        cp 3
        jr z, ef_stress
        ret

ef_changing:
        ld hl, EF_COUNT
        inc (hl)
        ld a, (hl)
        ld hl, SHARED1
        ld b, SHARED1_LEN
ef_changing_loop:
        ld (hl), a
        inc a
        inc hl
        djnz ef_changing_loop
        ret

ef_unchanged:
        ld hl, SHARED1
        ld b, SHARED1_LEN
ef_unchanged_loop:
        ld a, (hl)
        ld (hl), a
        inc hl
        djnz ef_unchanged_loop
        ret

ef_stress:
        ld a, (STRESS)
        ld c, 6
ef_stress_outer:
        ld b, 0
ef_stress_inner:
        ld (STRESS), a
        djnz ef_stress_inner
        dec c
        jr nz, ef_stress_outer
        ret

; One increment of command 9 per frame, while any are left.
count_step:
        ld a, (COUNT_LEFT)
        or a
        ret z
        dec a
        ld (COUNT_LEFT), a
        ld hl, (COUNT_ADDR)
        ld b, 1
        ld a, (COUNT_SLOW)
        or a
        jp z, bcd_add
        ; Slow: the whole number is read now and written back + 1 after the busy loop.
        ld e, (hl)
        inc hl
        ld d, (hl)
        dec hl
        call busy_wait
        ld a, e
        add a, 1
        daa
        ld (hl), a
        inc hl
        ld a, d
        adc a, 0
        daa
        ld (hl), a
        ret

; About 7 ms at 3.58 MHz (8 x 256 DJNZ of 13 T-states), with the CPU running.
busy_wait:
        ld c, 8
busy_outer:
        push bc
        ld b, 0
busy_inner:
        djnz busy_inner
        pop bc
        dec c
        jr nz, busy_outer
        ret

command:
        ld hl, (MB_ADDR)
        ld a, (MB_VAL)
        ld b, a
        ld a, (MB_CMD)
        cp 1
        jr z, cmd_set
        cp 2
        jr z, cmd_or
        cp 3
        jr z, cmd_and_not
        cp 4
        jr z, cmd_add
        cp 5
        jr z, cmd_every_frame
        cp 6
        jr z, cmd_mode
        cp 7
        jr z, cmd_new_game
        cp 9
        jr z, cmd_count
        cp 10
        jr z, cmd_spend
        cp 11
        jr z, cmd_slow_count
        ret
cmd_set:
        ld (hl), b
        ret
cmd_or:
        ld a, (hl)
        or b
        ld (hl), a
        ret
cmd_and_not:
        ld a, b
        cpl
        and (hl)
        ld (hl), a
        ret
cmd_add:
        ld a, (hl)
        add a, b
        ld (hl), a
        ret
cmd_every_frame:
        ld a, b
        ld (EF_MODE), a
        ret
cmd_mode:
        ld a, b
        ld (MODE), a
        ret
cmd_new_game:
        ld a, b
        ld (NG_PATTERN), a
        xor a
        ld (NG_STEP), a
        ld a, 1
        ld (MODE), a
        ret

cmd_count:
        xor a
        jr count_start
cmd_slow_count:
        ld a, 1
count_start:
        ld (COUNT_SLOW), a
        ld (COUNT_ADDR), hl
        ld a, b
        ld (COUNT_LEFT), a
        ret
cmd_spend:
        ld a, (hl)
        sub b
        daa
        ld (hl), a
        inc hl
        ld a, (hl)
        sbc a, 0
        daa
        ld (hl), a
        ret

; (HL) = (HL) + B as 4-digit BCD, low byte first: the carry into the high byte is
; written after the low byte, as games do.
bcd_add:
        ld a, (hl)
        add a, b
        daa
        ld (hl), a
        inc hl
        ld a, (hl)
        adc a, 0
        daa
        ld (hl), a
        ret

; One frame of the new game's set-up (command 7), if one is running.
new_game_step:
        ld a, (NG_PATTERN)
        or a
        ret z
        ld hl, NG_STEP
        inc (hl)
        ld c, (hl)              ; C = frame of the set-up, 1 in the command's frame
        cp 1
        jr z, ng_same_frame
        cp 2
        jr z, ng_next_frame
        cp 3
        jr z, ng_ten_frames
        cp 4
        jr z, ng_spread
        cp 5
        jr z, ng_starting_values
        jr ng_done
ng_same_frame:
        call clear_shared
        jr ng_done
ng_next_frame:
        ld a, c
        cp 2
        ret c
        call clear_shared
        jr ng_done
ng_ten_frames:
        ld a, c
        cp 11
        ret c
        call clear_shared
        jr ng_done
ng_spread:
        ld a, c                 ; frame 1..5 clears bytes 16 * (frame - 1) on
        dec a
        add a, a
        add a, a
        add a, a
        add a, a
        ld e, a
        ld d, 0
        ld hl, SHARED0
        add hl, de
        ld b, 16
ng_spread_loop:
        ld (hl), 0
        inc hl
        djnz ng_spread_loop
        ld a, c
        cp 5
        ret c
        jr ng_done
ng_starting_values:
        ld a, c
        cp 2
        ret c
        ld hl, starting_values
        ld de, SHARED0
        ld bc, SHARED_LEN
        ldir
ng_done:
        xor a
        ld (NG_PATTERN), a
        ret

clear_shared:
        ld hl, SHARED0
        ld de, SHARED0 + 1
        ld bc, SHARED_LEN - 1
        ld (hl), 0
        ldir
        ret

; What pattern 5 copies into the shared variables: 3 lives and a first weapon.
starting_values:
        db 3, 1
        ds SHARED_LEN - 2, 0

        ; Pad to 16 KiB.
        ds 8000h - $, 0FFh
