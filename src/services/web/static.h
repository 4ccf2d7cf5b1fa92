/*
 * static.h - serving a directory of files over HTTP (the web application, the OHIF viewer):
 * GET and HEAD, sendfile, a content type by extension, no way out of the directory, and an
 * optional single-page-application fallback (unknown paths answer with index.html).
 */
#ifndef WEB_STATIC_H
#define WEB_STATIC_H

#include <stdbool.h>

#include "error.h"
#include "http.h"

/* Serve `dir` under `prefix` ("/viewer/": "/viewer/app.js" is dir/app.js; "/viewer" redirects
 * to "/viewer/"). spa: paths without a file answer with dir/index.html. */
int web_static_register(struct web_server *s, const char *prefix, const char *dir, bool spa,
                        struct tr_error *err);

/* The media type for a file name ("application/javascript" for "x.js"). */
const char *web_media_type_for(const char *name);

#endif
