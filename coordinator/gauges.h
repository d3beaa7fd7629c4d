/*
 * The daemon's metrics (GET /metrics): counters and histograms in the context, gauges that read
 * the modules' state when scraped.
 */
#ifndef XA_GAUGES_H
#define XA_GAUGES_H

#include "coord.h"

/* Makes every metric of c and of its participants in c->metrics: 0, or -ENOMEM. */
XA_MUST_CHECK int gauges_register(coord *c);

#endif
