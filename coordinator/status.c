/*
 * The status snapshot (see status.h). It reads the state lists and the pools as they are now;
 * rates and latencies over time come from /metrics, which the page samples.
 */
#include "status.h"

#include "owner.h"
#include "preflight.h"
#include "recovery.h"

#include <stdio.h>

static const char *const state_names[TXN_NSTATES] = {"working", "deciding", "committing",
                                                     "aborting"};

bool status_part_usable(const coord *c, const coord_part *p)
{
    return owner_owns(c, p->index) && recovery_ready(c, p->index) && preflight_safe(c, p->index);
}

bool status_ready(const coord *c)
{
    for (int i = 0; i < c->nparts; i++)
        if (!status_part_usable(c, &c->parts[i]))
            return false;
    return true;
}

const char *status_part_state(const coord *c, const coord_part *p, char *buf, size_t len)
{
    px_pool_stats st;
    const char *failure = owner_failure(c, p->index);
    px_pool_get_stats(p->pool, &st);
    if (status_part_usable(c, p) && !st.up) {
        snprintf(buf, len, "down%s%s", failure[0] ? ": " : "", failure);
        return buf;
    }
    /* preflight_state: why an unsafe participant takes no work, or "ready" (with the findings
     * when allow_unsafe lets an unsafe one work). */
    return !owner_owns(c, p->index)       ? owner_state(c, p->index)
           : !recovery_ready(c, p->index) ? "recovering"
                                          : preflight_state(c, p->index);
}

static json_t *part_json(const coord *c, const coord_part *p)
{
    px_pool_stats st;
    char state[STATUS_STATE_MAX];
    px_pool_get_stats(p->pool, &st);
    return json_pack("{s:s, s:s, s:s, s:b, s:b, s:b, s:b, s:b, s:{s:i, s:i, s:i, s:i, s:i, "
                     "s:I, s:I}}",
                     "name", p->cfg->name, "driver", p->cfg->driver, "state",
                     status_part_state(c, p, state, sizeof state), "usable",
                     status_part_usable(c, p), "owned", owner_owns(c, p->index), "recovered",
                     recovery_ready(c, p->index), "safe", preflight_safe(c, p->index), "up", st.up,
                     "pool", "size", st.size, "open", st.open, "idle", st.idle, "busy", st.busy,
                     "waiting", st.waiting, "connects", (json_int_t)st.connects, "connect_failures",
                     (json_int_t)st.connect_failures);
}

json_t *status_json(const coord *c)
{
    json_t *parts = json_array(), *inflight = json_object();
    for (int i = 0; i < c->nparts; i++)
        json_array_append_new(parts, part_json(c, &c->parts[i]));
    for (int s = 0; s < TXN_NSTATES; s++)
        json_object_set_new(inflight, state_names[s], json_integer(c->lists[s].count));
    return json_pack("{s:s, s:s, s:s, s:I, s:b, s:b, s:o, s:o, s:{s:I, s:I, s:I}, s:i}", "version",
                     XACOORD_VERSION, "node_id", c->cfg->node_id, "identity", c->identity.id,
                     "boot", (json_int_t)c->boot, "ready", status_ready(c), "draining", c->draining,
                     "participants", parts, "inflight", inflight, "transactions", "committed",
                     (json_int_t)metric_counter_value(c->txn_committed), "aborted",
                     (json_int_t)metric_counter_value(c->txn_aborted), "rejected",
                     (json_int_t)metric_counter_value(c->txn_rejected), "max_inflight",
                     c->cfg->max_inflight);
}
