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
;   0xE122         private: game mode, 0 = title, 1 = playing
;   0xE123         private: every-frame mode (see command 5)
;   0xE124         private: value counter of every-frame mode 1
;   0xE128         private: BCD increments of command 9 still to do
;   0xE129-0xE12A  private: their target address (little endian)
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
;   6 game mode = V (0 title, 1 playing)
;   9 count:   add 1 to the 4-digit BCD number at T (low byte first, carry written
;     second) once per frame, V times, as a game collecting coins as fast as it can;
;     the acknowledge comes at once, 0xE128 reaches 0 when the last one is done
;  10 spend:   (T) = (T) - V as 4-digit BCD, V a BCD byte (0x15 is 15)

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
COUNT_LEFT  equ 0E128h
COUNT_ADDR  equ 0E129h
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
        jr bcd_add

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
        cp 9
        jr z, cmd_count
        cp 10
        jr z, cmd_spend
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
cmd_count:
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

        ; Pad to 16 KiB.
        ds 8000h - $, 0FFh
