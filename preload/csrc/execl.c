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

int snstack_execl_c(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int n = count_args(arg, ap);
    va_end(ap);
    if (n < 0) {
        errno = E2BIG;
        return -1;
    }
    char *argv[n + 1];
    va_start(ap, arg);
    argv[0] = (char *)arg;
    for (int i = 1; i < n; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[n] = NULL;
    return execv(path, argv);
}

int snstack_execlp_c(const char *file, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int n = count_args(arg, ap);
    va_end(ap);
    if (n < 0) {
        errno = E2BIG;
        return -1;
    }
    char *argv[n + 1];
    va_start(ap, arg);
    argv[0] = (char *)arg;
    for (int i = 1; i < n; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[n] = NULL;
    return execvp(file, argv);
}

int snstack_execle_c(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int n = count_args(arg, ap);
    va_end(ap);
    if (n < 0) {
        errno = E2BIG;
        return -1;
    }
    char *argv[n + 1];
    va_start(ap, arg);
    argv[0] = (char *)arg;
    for (int i = 1; i < n; i++)
        argv[i] = va_arg(ap, char *);
    /* After the terminating NULL comes envp. */
    if (n > 0)
        (void)va_arg(ap, char *);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    argv[n] = NULL;
    return execve(path, argv, envp);
}
