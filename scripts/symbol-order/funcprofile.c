// Preloaded into a process (LD_PRELOAD) to record exactly which functions of its executable run,
// in the order they first run, for the linker's symbol ordering file (see gen-symbol-order.py).
// Profiling runs only, never linked into SwiftEdge.
//
// Before the program starts, the first byte of every function in the executable's symbol table
// is replaced by a breakpoint (int3). The first call of a function traps; the SIGTRAP handler
// puts the original byte back, appends the function's link-time address to $FUNCPROFILE_OUT (one
// hex number per line) and resumes at the function's start. Each function traps once, so the
// program runs at nearly full speed after warming up. Unlike a page profile, this separates the
// functions that ran from their idle neighbours on the same page.
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ucontext.h>
#include <unistd.h>

static uintptr_t base;         // load address of the executable (PIE)
static uintptr_t *entries;     // run-time addresses of the functions, sorted
static unsigned char *original;
static size_t count;
static int out = -1;

static long find(uintptr_t address) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (entries[mid] < address) lo = mid + 1;
        else hi = mid;
    }
    return lo < count && entries[lo] == address ? (long)lo : -1;
}

static void on_trap(int sig, siginfo_t *info, void *context) {
    (void)info;
    ucontext_t *uc = context;
    uintptr_t address = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP] - 1;
    long i = find(address);
    if (i < 0) {
        signal(sig, SIG_DFL);  // a real breakpoint: let it happen
        return;
    }
    if (*(volatile unsigned char *)address == 0xCC) {
        *(volatile unsigned char *)address = original[i];
        char line[24];
        int n = 0;
        uintptr_t v = address - base;
        char digits[20];
        int d = 0;
        do { digits[d++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
        while (d) line[n++] = digits[--d];
        line[n++] = '\n';
        if (write(out, line, n) < 0) { /* nothing to do in a signal handler */ }
    }
    uc->uc_mcontext.gregs[REG_RIP] = (greg_t)address;  // another thread may have restored it first
}

static int first_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    *(uintptr_t *)data = info->dlpi_addr;
    return 1;  // the first object is the executable
}

static int by_address(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

__attribute__((constructor)) static void funcprofile_init(void) {
    const char *path = getenv("FUNCPROFILE_OUT");
    if (!path) return;
    out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
    if (out < 0) return;
    int fd = open("/proc/self/exe", O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) return;
    const unsigned char *file = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (file == MAP_FAILED) return;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)file;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(file + eh->e_shoff);
    dl_iterate_phdr(first_object, &base);

    // The executable's code segments, made writable for the breakpoints.
    uintptr_t text_lo = UINTPTR_MAX, text_hi = 0;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(file + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_X)) {
            uintptr_t lo = (base + ph[i].p_vaddr) & ~(uintptr_t)4095;
            uintptr_t hi = (base + ph[i].p_vaddr + ph[i].p_memsz + 4095) & ~(uintptr_t)4095;
            mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE | PROT_EXEC);
            if (lo < text_lo) text_lo = lo;
            if (hi > text_hi) text_hi = hi;
        }
    }
    for (int s = 0; s < eh->e_shnum; s++) {
        if (sh[s].sh_type != SHT_SYMTAB) continue;
        const Elf64_Sym *syms = (const Elf64_Sym *)(file + sh[s].sh_offset);
        size_t n = sh[s].sh_size / sizeof(Elf64_Sym);
        entries = malloc(n * sizeof *entries);
        for (size_t i = 0; i < n; i++) {
            if (ELF64_ST_TYPE(syms[i].st_info) != STT_FUNC || syms[i].st_shndx == SHN_UNDEF || syms[i].st_size == 0) continue;
            uintptr_t address = base + syms[i].st_value;
            if (address >= text_lo && address < text_hi) entries[count++] = address;
        }
    }
    munmap((void *)file, st.st_size);
    if (!count) return;
    qsort(entries, count, sizeof *entries, by_address);
    size_t unique = 0;
    for (size_t i = 0; i < count; i++)
        if (!unique || entries[unique - 1] != entries[i]) entries[unique++] = entries[i];
    count = unique;
    original = malloc(count);
    for (size_t i = 0; i < count; i++) {
        original[i] = *(unsigned char *)entries[i];
        *(unsigned char *)entries[i] = 0xCC;
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_trap;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTRAP, &action, NULL);
    if (getenv("FUNCPROFILE_VERBOSE")) fprintf(stderr, "funcprofile: %zu functions watched\n", count);
}
