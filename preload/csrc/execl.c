/* execl, execle, execlp: variadic, so their bodies cannot be written in stable Rust. glibc
 * implements them with internal calls that bypass the exec hooks, so without these a program that
 * execs with execl* would lose its offloaded fds. The exported symbols are naked Rust functions
 * (hooks.rs) that jump here with every register and the stack untouched; each of these collects
 * its arguments into an array and calls the vector form by its public name, which resolves to
 * the library's own hook. */
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <unistd.h>

/* Large enough for any real argument list; more arguments fail with E2BIG as the kernel would
 * for an oversized exec. */
#define SNSTACK_MAX_ARGS 4096

/* Counts the arguments from `arg0` to the terminating NULL (not included); -1 when too many. */
static int count_args(const char *arg0, va_list ap)
{
    int n = 1;
    if (arg0 == NULL)
        return 0;
    while (va_arg(ap, const char *) != NULL) {
        if (++n >= SNSTACK_MAX_ARGS)
            return -1;
    }
    return n;
}

/* Declares `argv` (a VLA) holding the variadic arguments after `arg` and their NULL, and leaves
 * `ap` just past that NULL (for execle's envp). Returns -1 with E2BIG from the enclosing function
 * when the list is too long. */
#define COLLECT_ARGV(arg, ap)                                                                      \
    va_list ap;                                                                                    \
    va_start(ap, arg);                                                                             \
    int n_ = count_args(arg, ap);                                                                  \
    va_end(ap);                                                                                    \
    if (n_ < 0) {                                                                                  \
        errno = E2BIG;                                                                             \
        return -1;                                                                                 \
    }                                                                                              \
    char *argv[n_ + 1];                                                                            \
    va_start(ap, arg);                                                                             \
    argv[0] = (char *)arg;                                                                         \
    for (int i_ = 1; i_ < n_; i_++)                                                                \
        argv[i_] = va_arg(ap, char *);                                                             \
    if (n_ > 0)                                                                                    \
        (void)va_arg(ap, char *);                                                                  \
    argv[n_] = NULL

int snstack_execl_c(const char *path, const char *arg, ...)
{
    COLLECT_ARGV(arg, ap);
    va_end(ap);
    return execv(path, argv);
}

int snstack_execlp_c(const char *file, const char *arg, ...)
{
    COLLECT_ARGV(arg, ap);
    va_end(ap);
    return execvp(file, argv);
}

int snstack_execle_c(const char *path, const char *arg, ...)
{
    COLLECT_ARGV(arg, ap);
    /* After the terminating NULL comes envp. */
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}
