/*
 * The gtrid and gid parsers (coordinator/identity.c, participants/participant.c): what a parser
 * accepts, the formatter writes back byte for byte - the contract recovery relies on when it
 * reads names back from pg_prepared_xacts and XA RECOVER.
 */
#include "identity.h"
#include "participant.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1), buf[2 * PX_XID_PART_MAX + 2];
    gtrid_parts g;
    px_xid x;
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    if (gtrid_parse(s, &g) == 0) {
        assert(gtrid_format(&g, buf, sizeof buf) == 0);
        assert(strcmp(buf, s) == 0);
        assert(strlen(buf) <= PX_XID_PART_MAX);
    }
    if (px_xid_parse_gid(&x, s) == 0) {
        px_xid_gid(&x, buf, sizeof buf);
        assert(strcmp(buf, s) == 0);
    }
    free(s);
    return 0;
}
