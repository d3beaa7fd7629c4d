/*
 * request_parse (coordinator/request.c) on arbitrary bytes: it either refuses with a message or
 * returns a request within the limits it was given.
 */
#include "request.h"

#include <assert.h>
#include <string.h>

static bool lookup(const char *name, void *arg, request_participant *out)
{
    (void)arg;
    if (strcmp(name, "alpha") == 0)
        *out = (request_participant){0, GUARD_POSTGRES};
    else if (strcmp(name, "beta") == 0)
        *out = (request_participant){1, GUARD_MYSQL};
    else if (strcmp(name, "mem") == 0)
        *out = (request_participant){2, GUARD_MEMORY};
    else
        return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const request_limits lim = {8, 16, 16, 4096, 5000, 60000};
    char err[512] = "";
    txn_request *req = request_parse((const char *)data, size, &lim, lookup, NULL, err, sizeof err);
    if (!req) {
        assert(err[0] != '\0');
        return 0;
    }
    assert(req->nbranches >= 1 && req->nbranches <= lim.max_branches);
    assert(req->timeout_ms >= 1 && req->timeout_ms <= lim.max_timeout_ms);
    assert(!req->id_given || (request_id_valid(req->id) && !request_id_reserved(req->id)));
    request_free(req);
    return 0;
}
