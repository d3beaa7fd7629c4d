/*
 * Where the file-based drivers (config, journal) write their inputs: tmpfs when the machine has
 * one at /dev/shm, because on a disk file system the creates and unlinks of every execution
 * cost more than the parsing that is being fuzzed.
 */
#ifndef XACOORD_FUZZ_SCRATCH_H
#define XACOORD_FUZZ_SCRATCH_H

#include <unistd.h>

static inline const char *scratch_dir(void)
{
    return access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
}

#endif
