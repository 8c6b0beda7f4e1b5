/* replay_main.c — a main() for building a fuzz target without libFuzzer (gcc, any cc):
 * `target FILE_OR_DIR...` runs LLVMFuzzerTestOneInput once on every file named and on every
 * regular file in every directory named (one level, dot files skipped), each in a heap block
 * of exactly its size, as libFuzzer passes inputs. Exit 0 after all ran (a failed property
 * aborts first), 2 when there was nothing to run or a file could not be read.
 *
 * main() is weak: built with -fsanitize=fuzzer, clang links libFuzzer's main() whole, which
 * takes precedence, so the same list of files builds either way.
 */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Larger than any committed input (libFuzzer's -max_len is 4096 in `make fuzz`). */
#define REPLAY_MAX (1 << 20)

static int run_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        perror(path);
        return -1;
    }
    uint8_t *buf = malloc(REPLAY_MAX);
    size_t n = buf ? fread(buf, 1, REPLAY_MAX, fp) : 0;
    int bad = buf == NULL || ferror(fp) || fgetc(fp) != EOF; /* unreadable, or too large */
    fclose(fp);
    if (bad) {
        fprintf(stderr, "%s: cannot read it whole (at most %d bytes)\n", path, REPLAY_MAX);
        free(buf);
        return -1;
    }
    uint8_t *exact = malloc(n ? n : 1); /* a read past the input is a heap overflow */
    if (exact == NULL) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 1;
}

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    DIR *dir = opendir(path);
    if (dir == NULL) {
        perror(path);
        return -1;
    }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) { /* bounded by the directory's entries */
        if (e->d_name[0] == '.')
            continue;
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        char *file = malloc(len);
        if (file == NULL)
            break;
        snprintf(file, len, "%s/%s", path, e->d_name);
        if (stat(file, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(file) < 0) {
                free(file);
                closedir(dir);
                return -1;
            }
            count++;
        }
        free(file);
    }
    closedir(dir);
    return count;
}

__attribute__((weak)) int main(int argc, char **argv)
{
    long total = 0;
    for (int i = 1; i < argc; i++) {
        int n = run_path(argv[i]);
        if (n < 0)
            return 2;
        total += n;
    }
    printf("%s: replayed %ld inputs\n", argc > 0 ? argv[0] : "replay", total);
    return total > 0 ? 0 : 2;
}
