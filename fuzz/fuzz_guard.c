/*
 * The statement guard (coordinator/guard.c) on arbitrary text in every dialect: it never reads out
 * of bounds, names a keyword that fits its buffer, and classifies only what it accepted.
 */
#include "guard.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const guard_dialect dialects[] = {GUARD_POSTGRES, GUARD_MYSQL, GUARD_MEMORY};
    char *sql = malloc(size + 1), keyword[32];
    if (!sql)
        return 0;
    memcpy(sql, data, size);
    sql[size] = '\0';
    for (size_t i = 0; i < sizeof dialects / sizeof dialects[0]; i++) {
        guard_verdict v = guard_check(sql, dialects[i], keyword, sizeof keyword);
        assert(strlen(keyword) < sizeof keyword);
        assert(guard_verdict_text(v) != NULL);
        if (v == GUARD_OK) {
            bool neutral, read_only;
            guard_classify(sql, dialects[i], &neutral, &read_only);
            /* read-only implies session-neutral (docs/design.md section 7) */
            assert(!read_only || neutral);
        }
    }
    free(sql);
    return 0;
}
