/*
 * An LD_PRELOAD library for the disk-fault tests (docs/design.md section 8, "Disk"): while the
 * file named by XAFAULT_FDATASYNC_FAIL exists, every fdatasync() fails with EIO and leaves the
 * file alone, as a disk that lost a write-back would report it. Without that file (the daemon's
 * start-up, its boot record) fdatasync works as usual, so a test arms the fault exactly when it
 * wants it: after the daemon is ready.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

int fdatasync(int fd)
{
    static int (*real)(int);
    const char *trigger = getenv("XAFAULT_FDATASYNC_FAIL");
    if (trigger && access(trigger, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real ? real(fd) : 0;
}
