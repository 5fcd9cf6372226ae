/* For the wine smoke test only (scripts/dist-smoke.sh), never shipped: Rust's standard
 * library on Windows takes its random numbers from ProcessPrng in bcryptprimitives.dll,
 * which Windows 10 and later have and wine 8 (Debian 12) lacks. This stand-in answers
 * with RtlGenRandom (advapi32), which wine has. */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
