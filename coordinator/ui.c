/*
 * The operator page's files (see ui.h). ui_assets.c is generated from ui/ by
 * coordinator/CMakeLists.txt: edit the files there, never the generated table.
 */
#include "ui.h"

#include <string.h>

static const char *content_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (dot && strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    return "text/html; charset=utf-8";
}

/* "/ui" and "/ui/" are the page itself. */
static const ui_asset *find(const char *path)
{
    if (strcmp(path, "/ui") == 0 || strcmp(path, "/ui/") == 0)
        path = "/ui/index.html";
    for (size_t i = 0; i < ui_nassets; i++)
        if (strcmp(ui_assets[i].path, path) == 0)
            return &ui_assets[i];
    return NULL;
}

bool ui_is_asset(const char *path)
{
    return find(path) != NULL;
}

void ui_serve(http_request *req, const char *path)
{
    const ui_asset *a = find(path);
    if (!a) {
        http_respond_error(req, 404, "no such file of the operator page");
        return;
    }
    http_respond(req, 200, content_type(a->path), a->data, a->len);
}
