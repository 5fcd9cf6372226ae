; msxsync co-op demo: a 16 KiB MSX cartridge (page 1, 0x4000-0x7FFF, "AB" header).
; Assemble: pasmo --bin games/demo/demo.asm games/demo/demo.rom   (or `make roms`)
; Runs on the free C-BIOS machines (C-BIOS_MSX1, C-BIOS_MSX2, C-BIOS_MSX2+) and on
; any real MSX. It only uses the standard BIOS entries INIT32, LDIRMV, LDIRVM, SNSMAT.
;
; What it shows: a tiny "game" whose inventory and coin counter are meant to be
; shared by msxsync (games/demo/demo.regions), while the marker position and step
; count belong to each player alone. The screen is rebuilt from RAM every frame, so
; a value that msxsync writes into RAM shows up at once.
;
; Keys (read with SNSMAT, edge-triggered: holding a key acts once):
;   title screen: SPACE or RETURN   start (clears the variables, then MODE = 01)
;   playing:      1 .. 8            toggle SWORD SHIELD KEY LAMP MAP BOOTS RING POTION
;                                   (bits 0..7 of ITEMS, one byte)
;                 9                 toggle CROWN (a byte of its own)
;                 0                 toggle HARP  (a byte of its own)
;                 SPACE             add a coin (COINS, BCD, 0000-9999, wraps)
;                 cursor keys       move your marker (private) and count steps
;                 ESC               back to the title screen (MODE = 00)
;
; RAM map (all in page 3; "shared" = listed in demo.regions):
;   E000        MODE    00 title screen, 01 playing       private (sync-when: E000 == 01)
;   E001        FRAME   frame counter                      private
;   E010        ITEMS   bit 0 SWORD, 1 SHIELD, 2 KEY,      SHARED (bit-level merge matters:
;                       3 LAMP, 4 MAP, 5 BOOTS, 6 RING,     two players toggling different
;                       7 POTION; bit set = owned          items write the same byte)
;   E011        CROWN   00 not owned, else owned           SHARED
;   E012        HARP    00 not owned, else owned           SHARED
;   E020-E021   COINS   4-digit BCD, low byte first        SHARED
;   E040        POSX    marker column 0..29                private
;   E041        POSY    marker row 0..6                    private
;   E042-E043   STEPS   4-digit BCD, low byte first        private
;   E050-E058   KEYPREV SNSMAT rows 0..8 of last frame     private
;   E060-E068   KEYNEW  keys pressed since last frame      private (1 = newly pressed)
;   E800-EAFF   SCREEN  copy of the 32x24 name table, sent to VRAM every frame
;
; Start-up (power-on and every start from the title screen) clears the shared
; variables like a real game does, and sets MODE to 01 only afterwards: with
; `sync-when: E000 == 01` a player on the title screen never wipes what the others
; collected; when MODE becomes 01 msxsync brings the shared bytes to the server's state.

; ---- BIOS entries and system variables ------------------------------------------
LDIRMV  equ 0059h       ; copy BC bytes from VRAM (HL) to RAM (DE)
LDIRVM  equ 005Ch       ; copy BC bytes from RAM (HL) to VRAM (DE)
INIT32  equ 006Fh       ; SCREEN 1: 32x24 text, name table at 1800h
SNSMAT  equ 0141h       ; A = keyboard matrix row A, bit clear = key down
CLIKSW  equ 0F3DBh      ; key click on/off
FORCLR  equ 0F3E9h      ; foreground colour used by INIT32
BAKCLR  equ 0F3EAh      ; background colour
BDRCLR  equ 0F3EBh      ; border colour

NAMTBL  equ 1800h       ; SCREEN 1 name table in VRAM
PATTBL  equ 0000h       ; SCREEN 1 pattern table (the font)
COLTBL  equ 2000h       ; SCREEN 1 colours, one byte per group of 8 characters

HILITE  equ 80h         ; characters 80h + c look like c in black on yellow
HICOLOR equ 1Bh         ; colour byte: foreground 1 (black), background 11 (yellow)

; ---- RAM ----------------------------------------------------------------------------
MODE    equ 0E000h
FRAME   equ 0E001h
ITEMS   equ 0E010h
CROWN   equ 0E011h
HARP    equ 0E012h
COINS   equ 0E020h
POSX    equ 0E040h
POSY    equ 0E041h
STEPS   equ 0E042h
KEYPREV equ 0E050h
KEYNEW  equ 0E060h
SCREEN  equ 0E800h

VARS    equ 0E000h      ; everything from here to VARSEND is cleared at power-on
VARSEND equ 0E0FFh

KEYROWS equ 9           ; SNSMAT rows 0..8 are read every frame

FIELDROW equ 15         ; playfield interior: rows 15..21, columns 1..30
FIELDCOL equ 1
FIELDW  equ 30
FIELDH  equ 7

        org 4000h

; ---- cartridge header -------------------------------------------------------------
        db "AB"
        dw start        ; INIT
        dw 0            ; STATEMENT
        dw 0            ; DEVICE
        dw 0            ; TEXT
        ds 6, 0         ; reserved

; ---- start-up -------------------------------------------------------------------------
start:
        di
        ld sp, 0F380h   ; below the system variables; we never return to the BIOS
        xor a
        ld (CLIKSW), a  ; no key click
        ld a, 15
        ld (FORCLR), a  ; white on dark blue
        ld a, 4
        ld (BAKCLR), a
        ld (BDRCLR), a
        call INIT32
        call make_hilite_font

        ; Clear all variables, as a game does at power-on. KEYPREV = 00 means "every
        ; key was down", so a key held while the machine starts does not count as a
        ; press.
        ld hl, VARS
        ld de, VARS + 1
        ld bc, VARSEND - VARS
        ld (hl), 0
        ldir

        call enter_title
        ei

; ---- main loop: one pass per frame ------------------------------------------------
main_loop:
        halt                    ; wait for the VDP interrupt (the BIOS handles it)
        call read_keys
        ld hl, FRAME
        inc (hl)
        ld a, (MODE)
        cp 1
        jr z, main_play
        call title_frame
        jr main_show
main_play:
        call play_frame
main_show:
        ld hl, SCREEN
        ld de, NAMTBL
        ld bc, 32 * 24
        call LDIRVM
        jr main_loop

; ---- keyboard -------------------------------------------------------------------------
; For every row: KEYNEW = keys down now that were up last frame (1 = newly pressed),
; KEYPREV = this frame's raw row.
read_keys:
        ld hl, KEYPREV
        ld de, KEYNEW
        ld b, 0
rk_loop:
        push bc
        push de
        push hl
        ld a, b
        call SNSMAT
        pop hl
        pop de
        pop bc
        ld c, a
        cpl                     ; 1 = down now
        and (hl)                ; and up last frame (bit set in KEYPREV)
        ld (de), a
        ld (hl), c
        inc hl
        inc de
        inc b
        ld a, b
        cp KEYROWS
        jr nz, rk_loop
        ret

; ---- title screen ---------------------------------------------------------------------
enter_title:
        xor a
        ld (MODE), a
        call clear_screen
        ld hl, title_texts
        jp draw_list

title_frame:
        ; SPACE (row 8 bit 0) or RETURN (row 7 bit 7) starts the game.
        ld a, (KEYNEW + 8)
        bit 0, a
        jr nz, start_game
        ld a, (KEYNEW + 7)
        bit 7, a
        jr nz, start_game
        ; Blink the prompt: shown for 48 frames, hidden for 16.
        ld a, (FRAME)
        and 30h
        cp 30h
        ld hl, prompt_on
        jr nz, title_prompt
        ld hl, prompt_off
title_prompt:
        jp draw_list

; Clears the variables a new game starts with, then enters MODE 01. The order is the
; point: the clearing happens while MODE is still 00, so it is never shared.
start_game:
        xor a
        ld (ITEMS), a
        ld (CROWN), a
        ld (HARP), a
        ld (COINS), a
        ld (COINS + 1), a
        ld (STEPS), a
        ld (STEPS + 1), a
        ld a, FIELDW / 2
        ld (POSX), a
        ld a, FIELDH / 2
        ld (POSY), a
        call clear_screen
        ld hl, play_texts
        call draw_list
        ld a, 1
        ld (MODE), a
        ret

; ---- playing --------------------------------------------------------------------------
play_frame:
        ; ESC (row 7 bit 2): back to the title screen.
        ld a, (KEYNEW + 7)
        bit 2, a
        jp nz, enter_title

        ; Keys 1..7 are row 0 bits 1..7 and key 8 is row 1 bit 0: shift them into
        ; one mask, bit n = item n+1, and flip those items.
        ld a, (KEYNEW)
        srl a
        ld b, a
        ld a, (KEYNEW + 1)
        rrca
        and 80h
        or b
        jr z, pf_no_items       ; write ITEMS only when something changed
        ld hl, ITEMS
        xor (hl)
        ld (hl), a
pf_no_items:
        ld a, (KEYNEW + 1)      ; key 9: row 1 bit 1
        bit 1, a
        ld hl, CROWN
        call nz, toggle_byte
        ld a, (KEYNEW)          ; key 0: row 0 bit 0
        bit 0, a
        ld hl, HARP
        call nz, toggle_byte

        ld a, (KEYNEW + 8)      ; SPACE: row 8 bit 0
        bit 0, a
        call nz, add_coin

        call move_marker
        jp draw_play

; (HL) = 01 if it was 00, else 00.
toggle_byte:
        ld a, (hl)
        or a
        ld a, 1
        jr z, tb_store
        xor a
tb_store:
        ld (hl), a
        ret

add_coin:
        ld hl, COINS
        jp bcd_inc

; Adds 1 to the 4-digit BCD number at (HL), low byte first; 9999 wraps to 0000.
bcd_inc:
        ld a, (hl)
        add a, 1
        daa
        ld (hl), a
        inc hl
        ld a, (hl)
        adc a, 0
        daa
        ld (hl), a
        ret

; Cursor keys, row 8: bit 4 left, 5 up, 6 down, 7 right. Each press moves one cell
; inside the playfield and counts a step.
move_marker:
        ld a, (KEYNEW + 8)
        ld c, a
        bit 4, c
        jr z, mm_not_left
        ld a, (POSX)
        or a
        jr z, mm_not_left
        dec a
        ld (POSX), a
        call count_step
mm_not_left:
        bit 7, c
        jr z, mm_not_right
        ld a, (POSX)
        cp FIELDW - 1
        jr nc, mm_not_right
        inc a
        ld (POSX), a
        call count_step
mm_not_right:
        bit 5, c
        jr z, mm_not_up
        ld a, (POSY)
        or a
        jr z, mm_not_up
        dec a
        ld (POSY), a
        call count_step
mm_not_up:
        bit 6, c
        ret z
        ld a, (POSY)
        cp FIELDH - 1
        ret nc
        inc a
        ld (POSY), a
        ; fall through

count_step:
        push bc
        ld hl, STEPS
        call bcd_inc
        pop bc
        ret

; Writes every value that can change into the screen copy. The labels and the
; frame were drawn once by start_game.
draw_play:
        ; ITEMS bits 0..7: an X between the brackets when owned.
        ld a, (ITEMS)
        ld c, a
        ld hl, item_cells
        ld b, 8
dp_items:
        ld e, (hl)
        inc hl
        ld d, (hl)
        inc hl
        ld a, ' '
        rrc c
        jr nc, dp_item_store
        ld a, 'X'
dp_item_store:
        ld (de), a
        djnz dp_items

        ld a, (CROWN)
        ld de, SCREEN + 7 * 32 + 11
        call draw_owned
        ld a, (HARP)
        ld de, SCREEN + 7 * 32 + 28
        call draw_owned

        ld de, SCREEN + 9 * 32 + 8
        ld hl, COINS
        call draw_bcd4
        ld de, SCREEN + 13 * 32 + 8
        ld hl, STEPS
        call draw_bcd4

        ld a, (POSX)
        ld de, SCREEN + 23 * 32 + 3
        call draw_dec2
        ld a, (POSY)
        ld de, SCREEN + 23 * 32 + 9
        call draw_dec2

        ; Blank the playfield interior, then put the marker in it.
        ld hl, SCREEN + FIELDROW * 32 + FIELDCOL
        ld b, FIELDH
dp_field_row:
        push bc
        push hl
        ld d, h
        ld e, l
        inc de
        ld (hl), ' '
        ld bc, FIELDW - 1
        ldir
        pop hl
        ld bc, 32
        add hl, bc
        pop bc
        djnz dp_field_row

        ld a, (POSY)
        cp FIELDH               ; a value out of range is drawn nowhere
        ret nc
        ld l, a
        ld h, 0
        add hl, hl
        add hl, hl
        add hl, hl
        add hl, hl
        add hl, hl              ; POSY * 32
        ld a, (POSX)
        cp FIELDW
        ret nc
        ld e, a
        ld d, 0
        add hl, de
        ld de, SCREEN + FIELDROW * 32 + FIELDCOL
        add hl, de
        ld (hl), '@'
        ret

; (DE) = 'X' if A != 0, else ' '.
draw_owned:
        or a
        ld a, ' '
        jr z, do_store
        ld a, 'X'
do_store:
        ld (de), a
        ret

; Four BCD digits of the number at (HL) (low byte first) to (DE).
draw_bcd4:
        inc hl
        ld a, (hl)
        call draw_bcd2
        dec hl
        ld a, (hl)
        ; fall through
; Two BCD digits of A to (DE), DE advances by 2.
draw_bcd2:
        push af
        rrca
        rrca
        rrca
        rrca
        call draw_nibble
        pop af
draw_nibble:
        and 0Fh
        add a, '0'
        ld (de), a
        inc de
        ret

; A (0..99) as two decimal digits to (DE).
draw_dec2:
        ld b, '0' - 1
dd_tens:
        inc b
        sub 10
        jr nc, dd_tens
        add a, 10 + '0'
        ex de, hl
        ld (hl), b
        inc hl
        ld (hl), a
        ex de, hl
        ret

; ---- screen copy helpers ----------------------------------------------------------
; Copies the font's characters 20h-5Fh (space, digits, punctuation, capitals) to
; A0h-DFh and colours those black on yellow, for the highlighted headers.
make_hilite_font:
        ld hl, PATTBL + 20h * 8
        ld de, SCREEN           ; the screen copy is free during start-up
        ld bc, 40h * 8
        call LDIRMV
        ld hl, SCREEN
        ld de, PATTBL + (20h + HILITE) * 8
        ld bc, 40h * 8
        call LDIRVM
        ld hl, SCREEN
        ld b, 8
mhf_colour:
        ld (hl), HICOLOR
        inc hl
        djnz mhf_colour
        ld hl, SCREEN
        ld de, COLTBL + (20h + HILITE) / 8
        ld bc, 8
        jp LDIRVM

clear_screen:
        ld hl, SCREEN
        ld de, SCREEN + 1
        ld bc, 32 * 24 - 1
        ld (hl), ' '
        ldir
        ret

; Draws a list of texts: each is ROW, COLUMN, characters, 0; the list ends with FFh.
; ROW + HILITE draws the text highlighted.
draw_list:
        ld a, (hl)
        cp 0FFh
        ret z
        ld c, 0
        cp HILITE
        jr c, dl_plain
        ld c, HILITE
        sub c
dl_plain:
        ld d, a
        inc hl
        ld e, (hl)
        inc hl
        push hl
        ld l, d
        ld h, 0
        add hl, hl
        add hl, hl
        add hl, hl
        add hl, hl
        add hl, hl              ; ROW * 32
        ld d, 0
        add hl, de
        ld de, SCREEN
        add hl, de
        ex de, hl               ; DE = where the text goes
        pop hl
dl_char:
        ld a, (hl)
        inc hl
        or a
        jr z, draw_list
        or c
        ld (de), a
        inc de
        jr dl_char

; ---- data -------------------------------------------------------------------------------
; Where the X of item n+1 goes (ITEMS bit n): items 1-4 in the left column, 5-8 right.
item_cells:
        dw SCREEN + 3 * 32 + 11, SCREEN + 4 * 32 + 11
        dw SCREEN + 5 * 32 + 11, SCREEN + 6 * 32 + 11
        dw SCREEN + 3 * 32 + 28, SCREEN + 4 * 32 + 28
        dw SCREEN + 5 * 32 + 28, SCREEN + 6 * 32 + 28

title_texts:
        db 3 + HILITE, 6, " MSXSYNC CO-OP DEMO ", 0
        db 7, 2, "ONE INVENTORY AND ONE PURSE", 0
        db 8, 2, "SHARED BY EVERY PLAYER,", 0
        db 9, 2, "ONE MARKER EACH.", 0
        db 17, 1, "KEYS  1-9,0  TAKE/DROP ITEMS", 0
        db 18, 1, "      SPACE  ADD A COIN", 0
        db 19, 1, "      CURSORS MOVE YOUR MARKER", 0
        db 20, 1, "      ESC    BACK TO THE TITLE", 0
        db 0FFh

prompt_on:
        db 13, 4, "PRESS SPACE OR RETURN", 0
        db 14, 11, "TO START", 0
        db 0FFh
prompt_off:
        db 13, 4, "                     ", 0
        db 14, 11, "        ", 0
        db 0FFh

play_texts:
        db 0 + HILITE, 0, "       MSXSYNC CO-OP DEMO       ", 0
        db 2 + HILITE, 0, " SHARED: SAME FOR ALL PLAYERS ", 0
        db 3, 1, "1 SWORD  [ ]     5 MAP    [ ]", 0
        db 4, 1, "2 SHIELD [ ]     6 BOOTS  [ ]", 0
        db 5, 1, "3 KEY    [ ]     7 RING   [ ]", 0
        db 6, 1, "4 LAMP   [ ]     8 POTION [ ]", 0
        db 7, 1, "9 CROWN  [ ]     0 HARP   [ ]", 0
        db 9, 1, "COINS  0000   SPACE ADDS ONE", 0
        db 12 + HILITE, 0, " PRIVATE: YOURS ONLY ", 0
        db 13, 1, "STEPS  0000   CURSORS MOVE @", 0
        db FIELDROW - 1, 0, "+------------------------------+", 0
        db FIELDROW + 0, 0, "|", 0
        db FIELDROW + 0, 31, "|", 0
        db FIELDROW + 1, 0, "|", 0
        db FIELDROW + 1, 31, "|", 0
        db FIELDROW + 2, 0, "|", 0
        db FIELDROW + 2, 31, "|", 0
        db FIELDROW + 3, 0, "|", 0
        db FIELDROW + 3, 31, "|", 0
        db FIELDROW + 4, 0, "|", 0
        db FIELDROW + 4, 31, "|", 0
        db FIELDROW + 5, 0, "|", 0
        db FIELDROW + 5, 31, "|", 0
        db FIELDROW + 6, 0, "|", 0
        db FIELDROW + 6, 31, "|", 0
        db FIELDROW + FIELDH, 0, "+------------------------------+", 0
        db 23, 1, "X 00  Y 00", 0
        db 23, 17, "ESC: TITLE", 0
        db 0FFh

; Pad to 16 KiB so the file is a plain 16 KiB ROM image.
        ds 8000h - $, 0FFh

        end
