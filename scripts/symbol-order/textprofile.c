// Preloaded into a process (LD_PRELOAD) to see which pages of its executable's code it runs, for
// the linker's symbol ordering file (see gen-symbol-order.py). Profiling runs only, never linked
// into SwiftEdge.
//
// Before the program starts, its executable code is made inaccessible (PROT_NONE). The first
// instruction fetched from a page faults; the SIGSEGV handler makes that one page executable again
// and returns, so the instruction runs. A page is therefore executable exactly when the program
// ran code in it, and /proc/<pid>/maps shows which (r-xp) — precise to the page, unlike the
// resident set, which the kernel's fault-around and large page-cache folios inflate to 64 KB and
// more per touch.
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uintptr_t text_lo, text_hi;

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)context;
    uintptr_t address = (uintptr_t)info->si_addr;
    if (address >= text_lo && address < text_hi) {
        mprotect((void *)(address & ~(uintptr_t)4095), 4096, PROT_READ | PROT_EXEC);
        return;
    }
    signal(sig, SIG_DFL);  // a real crash: let it happen
}

__attribute__((constructor)) static void textprofile_init(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return;
    char line[8192];
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[8];
        int path = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &path) < 3 || path == 0) continue;
        char *name = line + path;
        name[strcspn(name, "\n")] = 0;
        if (strcmp(name, exe) == 0 && perms[2] == 'x') { text_lo = lo; text_hi = hi; }
    }
    fclose(maps);
    if (!text_hi) return;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, NULL);
    mprotect((void *)text_lo, text_hi - text_lo, PROT_NONE);
    if (getenv("TEXTPROFILE_VERBOSE")) fprintf(stderr, "textprofile: %lu KB of code watched\n", (text_hi - text_lo) / 1024);
}
