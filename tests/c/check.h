/* check.h — the one check macro of the plain-C unit tests in tests/c/ (no Python here).
 *
 * tests/test_c_units.py builds every tests/c/test_*.c twice against src_c/: with
 * assertions (no NDEBUG, as FASTSOCK_DEBUG=1 builds) and without (-DNDEBUG, as releases).
 *
 *   CHECK(cond)      count a failure, print where and what, and go on
 *   REQUIRE(cond)    the same, then exit(1): for what the rest of a test stands on
 *   check_context    a label printed with each failure (e.g. which poll method), or NULL
 *   check_report(n)  at the end of main(): prints the summary, returns main's exit status
 *   check_aborts()   runs a function in a child process: it must die of a failed src_c
 *                    assertion in a build with assertions, and return normally with NDEBUG
 */
#ifndef FS_TESTS_CHECK_H
#define FS_TESTS_CHECK_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef NDEBUG
#define CHECK_BUILD "NDEBUG: src_c assertions compiled out"
#else
#define CHECK_BUILD "src_c assertions on"
#endif

static int check_failures = 0;
static const char *check_context = NULL;

static inline void check_failed(const char *file, int line, const char *what)
{
    if (check_context != NULL)
        fprintf(stderr, "%s:%d [%s]: CHECK(%s) failed\n", file, line, check_context, what);
    else
        fprintf(stderr, "%s:%d: CHECK(%s) failed\n", file, line, what);
    check_failures++;
}

#define CHECK(cond)                                      \
    do {                                                 \
        if (!(cond))                                     \
            check_failed(__FILE__, __LINE__, #cond);     \
    } while (0)

#define REQUIRE(cond)                                    \
    do {                                                 \
        if (!(cond)) {                                   \
            check_failed(__FILE__, __LINE__, #cond);     \
            fprintf(stderr, "required: giving up\n");    \
            exit(1);                                     \
        }                                                \
    } while (0)

static inline int check_report(const char *name)
{
    if (check_failures) {
        fprintf(stderr, "%s (%s): %d check(s) failed\n", name, CHECK_BUILD, check_failures);
        return 1;
    }
    printf("%s (%s): all passed\n", name, CHECK_BUILD);
    return 0;
}

/* Runs fn(arg) in a forked child whose stderr is captured. With assertions on, the child
 * must be killed by SIGABRT and have printed `needle` (part of the failed assertion's
 * text); with NDEBUG the assertions do not exist, so fn must return and the child exit 0.
 * fn should break an invariant in a way that is harmless when nothing checks it.
 * Returns 1 when the child did as expected, else prints what it did and returns 0. */
static inline int check_aborts(void (*fn)(void *), void *arg, const char *needle)
{
    int out[2];
    if (pipe(out) != 0)
        return 0;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(out[0]);
        close(out[1]);
        return 0;
    }
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* an expected abort leaves no core file behind */
        close(out[0]);
        dup2(out[1], STDERR_FILENO);
        fn(arg);
        _exit(0); /* no atexit handlers (and no leak check) in the child */
    }
    close(out[1]);
    char text[4096];
    size_t got = 0;
    for (;;) { /* read to EOF (the child's exit), keeping the first 4 KiB */
        char chunk[512];
        ssize_t n = read(out[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t keep = (size_t)n < sizeof text - 1 - got ? (size_t)n : sizeof text - 1 - got;
        memcpy(text + got, chunk, keep);
        got += keep;
    }
    text[got] = '\0';
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 0;
#ifdef NDEBUG
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    (void)needle;
#else
    int ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strstr(text, needle) != NULL;
#endif
    if (!ok)
        fprintf(stderr, "check_aborts(\"%s\") [%s]: the child %s %d; its stderr:\n%s\n", needle, CHECK_BUILD,
                WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), text);
    return ok;
}

#endif /* FS_TESTS_CHECK_H */
