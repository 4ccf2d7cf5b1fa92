/*
 * static.c - a directory served over HTTP (see static.h).
 *
 * Paths are resolved with openat() below the directory's descriptor, component by component
 * with O_NOFOLLOW, after rejecting "." and ".." components: a request cannot leave the
 * directory, not even through a symbolic link planted inside it.
 */
#include "common.h"
#include "static.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct static_dir {
    char *prefix;
    size_t prefix_len;
    int dirfd;
    bool spa;
};

static void static_free(void *p)
{
    struct static_dir *d = p;
    if (d->dirfd >= 0)
        close(d->dirfd);
    tr_free(d->prefix);
    tr_free(d);
}

const char *web_media_type_for(const char *name)
{
    static const struct {
        const char *ext;
        const char *type;
    } map[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "application/javascript"},
        {".mjs", "application/javascript"},    {".css", "text/css"},
        {".json", "application/json"},         {".map", "application/json"},
        {".svg", "image/svg+xml"},             {".png", "image/png"},
        {".jpg", "image/jpeg"},                {".ico", "image/x-icon"},
        {".woff2", "font/woff2"},              {".woff", "font/woff"},
        {".ttf", "font/ttf"},                  {".wasm", "application/wasm"},
        {".txt", "text/plain; charset=utf-8"}, {".webmanifest", "application/manifest+json"},
        {".gif", "image/gif"},                 {".pdf", "application/pdf"},
    };
    const char *dot = strrchr(name, '.');
    if (dot) {
        for (size_t i = 0; i < TR_ARRAY_SIZE(map); i++) {
            if (strcasecmp(dot, map[i].ext) == 0)
                return map[i].type;
        }
    }
    return "application/octet-stream";
}

/* Open `rel` below dirfd without following links or climbing out. -1 with errno. */
static int open_below(int dirfd, const char *rel)
{
    char path[1024];
    if (snprintf(path, sizeof(path), "%s", rel) >= (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = dup(dirfd);
    if (fd < 0)
        return -1;
    char *save = NULL;
    char *part = strtok_r(path, "/", &save);
    while (part) {
        if (strcmp(part, ".") == 0 || strcmp(part, "..") == 0) {
            close(fd);
            errno = EACCES;
            return -1;
        }
        char *next = strtok_r(NULL, "/", &save);
        int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (next ? O_DIRECTORY : 0);
        int child = openat(fd, part, flags);
        int e = errno;
        close(fd);
        if (child < 0) {
            errno = e;
            return -1;
        }
        fd = child;
        part = next;
    }
    return fd;
}

static void serve_file(struct web_request *r, int fd, const char *name, bool immutable)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        web_reply_problem(r, 404, "Not Found", "no such file");
        return;
    }
    /* Bundles with a content hash in their name never change; index.html and the
     * configuration must be fetched again. */
    web_header_add(r, "Cache-Control", immutable ? "public, max-age=86400" : "no-cache");
    web_reply_fd(r, 200, web_media_type_for(name), fd, 0, (uint64_t)st.st_size);
}

static void handle(void *ctx, struct web_request *r)
{
    struct static_dir *d = ctx;
    const char *path = web_path(r);
    if (strlen(path) + 1 == d->prefix_len) { /* "/viewer" -> "/viewer/" */
        web_header_add(r, "Location", d->prefix);
        web_reply(r, 301, "text/plain", "", 0);
        return;
    }
    /* The application's fallback never answers for the server's own resources. */
    static const char *const reserved[] = {"/dicom-web", "/api/", "/wado", "/fhir", "/metrics",
                                           "/healthz"};
    for (size_t i = 0; d->prefix_len == 1 && i < TR_ARRAY_SIZE(reserved); i++) {
        if (strncmp(path, reserved[i], strlen(reserved[i])) == 0) {
            web_reply_problem(r, 404, "Not Found", "no resource at this path");
            return;
        }
    }
    const char *rel = path + d->prefix_len;
    if (strchr(rel, '\\') || strstr(rel, "//")) {
        web_reply_problem(r, 400, "Bad Request", "invalid path");
        return;
    }
    const char *name = *rel ? rel : "index.html";
    int fd = open_below(d->dirfd, name);
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            int index = openat(fd, "index.html", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            close(fd);
            fd = index;
            name = "index.html";
        }
    }
    if (fd < 0 && errno == EACCES) {
        web_reply_problem(r, 403, "Forbidden", "invalid path");
        return;
    }
    if (fd < 0 && d->spa && !strchr(strrchr(name, '/') ? strrchr(name, '/') : name, '.')) {
        /* A client-side route ("/viewer/viewer?StudyInstanceUIDs=..."): the app's page. */
        fd = openat(d->dirfd, "index.html", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        name = "index.html";
    }
    if (fd < 0) {
        web_reply_problem(r, 404, "Not Found", "no such file");
        return;
    }
    bool immutable = strcmp(name, "index.html") != 0 && !strstr(name, "config") &&
                     (strstr(name, ".bundle.") || strstr(name, ".chunk.") ||
                      strstr(name, ".woff") || strstr(name, ".wasm"));
    serve_file(r, fd, name, immutable);
}

int web_static_register(struct web_server *s, const char *prefix, const char *dir, bool spa,
                        struct tr_error *err)
{
    size_t n = strlen(prefix);
    if (n < 1 || prefix[0] != '/' || prefix[n - 1] != '/')
        return tr_error_set(err, TR_EINVAL, "a static prefix starts and ends with '/'");
    struct static_dir *d = tr_calloc(1, sizeof(*d));
    if (!d)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    d->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    d->prefix = tr_strdup(prefix);
    d->prefix_len = n;
    d->spa = spa;
    if (d->dirfd < 0 || !d->prefix) {
        int e = errno;
        static_free(d);
        return tr_error_set(err, TR_EIO, "cannot serve %s: %s", dir, strerror(e));
    }
    if (web_server_own(s, d, static_free) < 0) {
        static_free(d);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    char pattern[512];
    snprintf(pattern, sizeof(pattern), "%s*", prefix);
    struct web_route route = {.method = "GET", .pattern = pattern, .handler = handle, .ctx = d};
    int rc = web_server_route(s, &route);
    if (rc == 0 && n > 1) {
        snprintf(pattern, sizeof(pattern), "%.*s", (int)(n - 1), prefix);
        route.pattern = pattern;
        rc = web_server_route(s, &route);
    }
    return rc < 0 ? tr_error_set(err, TR_ENOMEM, "out of memory") : 0;
}
