/*
 * Trampolines that let libsandgate_native.so, linked against the build host's glibc, load in
 * an Envoy on glibc 2.30 (Envoy's own floor). build.rs links this object into the cdylib only
 * and passes -Wl,--wrap=<name> for every WRAP/WRAP_STAT line below (it reads this file for
 * them, so this file is the one list): each reference the Rust code makes to <name> goes to
 * __wrap_<name>, which jumps to a version of <name> that glibc 2.30 already had.
 *
 * The newer versions exist because glibc 2.34 moved libpthread and libdl into libc (each
 * symbol got a GLIBC_2.34 version there), 2.32 re-versioned pthread_getattr_np and 2.33 first
 * exported stat64/fstat64 (WRAP_STAT). glibc keeps the old versions, as aliases of the same
 * code (__xstat64 as a shim over it), so binding to them changes nothing on a new host. On an old host those versions live in libpthread.so.0 / libdl.so.2, which build.rs
 * therefore makes the module need as well.
 *
 * No glibc headers: their prototypes carry the new versions' redirections and feature
 * macros; plain forwarders need only the argument registers, so opaque pointers do.
 * build.rs compiles this with -O2 in every profile, so each trampoline is one tail jump.
 *
 * When a dependency makes the module need another symbol above GLIBC_2.30,
 * scripts/glibc-check fails the build naming it; add a line here (the old version from
 * `objdump -T /lib/x86_64-linux-gnu/libc.so.6 | grep -w <name>`, in parentheses there).
 */

typedef unsigned long size_t_;
typedef unsigned long pthread_t_;
typedef unsigned int pthread_key_t_;

/* WRAP(name, version, return type, (parameters), (arguments)) */
#define WRAP(name, version, ret, params, args)                                                \
    extern ret sandgate_old_##name params;                                                    \
    __asm__(".symver sandgate_old_" #name ", " #name "@" version);                            \
    __attribute__((visibility("hidden"))) ret __wrap_##name params                            \
    {                                                                                         \
        return sandgate_old_##name args;                                                      \
    }

/* Before 2.33, stat64 and fstat64 were not exported at all: <sys/stat.h> inlined them into
 * __xstat64/__fxstat64 with a struct-layout version, which on x86_64 is 1 (_STAT_VER_LINUX). */
#define STAT_VER_LINUX 1
#define WRAP_STAT(name, xname, version, first)                                                \
    extern int sandgate_old_##xname(int ver, first, void *buf);                               \
    __asm__(".symver sandgate_old_" #xname ", " #xname "@" version);                          \
    __attribute__((visibility("hidden"))) int __wrap_##name(first, void *buf)                 \
    {                                                                                         \
        return sandgate_old_##xname(STAT_VER_LINUX, arg, buf);                                \
    }

/* clang-format off */
WRAP(dlsym, "GLIBC_2.2.5", void *, (void *handle, const char *symbol), (handle, symbol))
WRAP(pthread_attr_getguardsize, "GLIBC_2.2.5", int, (const void *attr, size_t_ *size), (attr, size))
WRAP(pthread_attr_getstack, "GLIBC_2.2.5", int, (const void *attr, void **addr, size_t_ *size), (attr, addr, size))
WRAP(pthread_attr_setstacksize, "GLIBC_2.2.5", int, (void *attr, size_t_ size), (attr, size))
WRAP(pthread_create, "GLIBC_2.2.5", int, (pthread_t_ *thread, const void *attr, void *(*start)(void *), void *arg), (thread, attr, start, arg))
WRAP(pthread_detach, "GLIBC_2.2.5", int, (pthread_t_ thread), (thread))
WRAP(pthread_getattr_np, "GLIBC_2.2.5", int, (pthread_t_ thread, void *attr), (thread, attr))
WRAP(pthread_join, "GLIBC_2.2.5", int, (pthread_t_ thread, void **ret), (thread, ret))
WRAP(pthread_key_create, "GLIBC_2.2.5", int, (pthread_key_t_ *key, void (*dtor)(void *)), (key, dtor))
WRAP(pthread_key_delete, "GLIBC_2.2.5", int, (pthread_key_t_ key), (key))
WRAP(pthread_setname_np, "GLIBC_2.12", int, (pthread_t_ thread, const char *name), (thread, name))
WRAP(pthread_setspecific, "GLIBC_2.2.5", int, (pthread_key_t_ key, const void *value), (key, value))
WRAP_STAT(stat64, __xstat64, "GLIBC_2.2.5", const char *arg)
WRAP_STAT(fstat64, __fxstat64, "GLIBC_2.2.5", int arg)
/* clang-format on */
