/*
 * The operator page (docs/operations.md "The operator page"): the static files of ui/, compiled
 * into the binary by CMake (ui_assets.c), served at /ui. The files hold no data and no secret;
 * the page asks the token-guarded API for everything it shows, so they are served without the
 * token.
 */
#ifndef XA_UI_H
#define XA_UI_H

#include "http.h"

#include <stdbool.h>
#include <stddef.h>

/* One file of ui/, as generated into ui_assets.c. */
typedef struct ui_asset {
    const char *path; /* "/ui/app.js" */
    const char *data;
    size_t len;
} ui_asset;

extern const ui_asset ui_assets[];
extern const size_t ui_nassets;

/* path is the operator page or one of its files. */
bool ui_is_asset(const char *path);
/* Answers a GET of such a path with the file (a HEAD gets the headers only). */
void ui_serve(http_request *req, const char *path);

#endif
