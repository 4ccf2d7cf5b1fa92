/*
 * config.c - the configuration file (see config.h).
 */
#include "common.h"
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int add(struct cfg *c, const char *section, const char *key, const char *value, int line)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        struct cfg_entry *e = tr_reallocarray(c->entry, cap, sizeof(*e));
        if (!e)
            return TR_ENOMEM;
        c->entry = e;
        c->cap = cap;
    }
    struct cfg_entry *e = &c->entry[c->count];
    e->section = tr_strdup(section);
    e->key = tr_strdup(key);
    e->value = tr_strdup(value);
    e->line = line;
    if (!e->section || !e->key || !e->value) {
        tr_free(e->section);
        tr_free(e->key);
        tr_free(e->value);
        return TR_ENOMEM;
    }
    c->count++;
    return 0;
}

int cfg_load(struct cfg *c, const char *path, struct tr_error *err)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->path, sizeof(c->path), "%s", path);
    FILE *f = fopen(path, "r");
    if (!f)
        return tr_error_set(err, TR_ENOTFOUND, "%s: %s", path, strerror(errno));
    char line[4096], section[256] = "";
    int n = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        n++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = tr_error_set(err, TR_ELIMIT, "%s:%d: line longer than %zu characters", path, n,
                              sizeof(line) - 2);
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            char *after = end ? trim(end + 1) : NULL;
            if (!end || (after[0] && after[0] != '#' && after[0] != ';')) {
                rc = tr_error_set(err, TR_EINVAL, "%s:%d: a section is \"[name]\"", path, n);
                break;
            }
            *end = '\0';
            char *name = trim(s + 1);
            /* "site  tx" -> "site tx" */
            char *sp = strchr(name, ' ');
            if (sp) {
                *sp = '\0';
                snprintf(section, sizeof(section), "%s %s", name, trim(sp + 1));
            } else {
                snprintf(section, sizeof(section), "%s", name);
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = tr_error_set(err, TR_EINVAL, "%s:%d: expected \"key = value\"", path, n);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (value[0] == '"') {
            /* Quoted: spaces kept, a comment may follow the closing quote. */
            char *close = strchr(value + 1, '"');
            if (!close) {
                rc = tr_error_set(err, TR_EINVAL, "%s:%d: unclosed quote", path, n);
                break;
            }
            *close = '\0';
            value++;
        } else {
            /* A comment after a value starts with whitespace then # or ;. */
            for (char *p = value; *p; p++) {
                if ((*p == '#' || *p == ';') && p > value && isspace((unsigned char)p[-1])) {
                    *p = '\0';
                    value = trim(value);
                    break;
                }
            }
        }
        if (!*section) {
            rc = tr_error_set(err, TR_EINVAL, "%s:%d: \"%s\" is outside any [section]", path, n,
                              key);
            break;
        }
        rc = add(c, section, key, value, n);
        if (rc)
            tr_error_set(err, rc, "out of memory");
    }
    fclose(f);
    if (rc)
        cfg_release(c);
    return rc;
}

void cfg_release(struct cfg *c)
{
    for (size_t i = 0; i < c->count; i++) {
        tr_free(c->entry[i].section);
        tr_free(c->entry[i].key);
        tr_free(c->entry[i].value);
    }
    tr_free(c->entry);
    c->entry = NULL;
    c->count = c->cap = 0;
}

static void env_name(const char *section, const char *key, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "TELERAD_%s_%s", section, key);
    for (size_t i = 0; i < n && i < size; i++) {
        unsigned char ch = (unsigned char)out[i];
        out[i] = isalnum(ch) ? (char)toupper(ch) : '_';
    }
}

static const struct cfg_entry *find(const struct cfg *c, const char *section, const char *key)
{
    const struct cfg_entry *found = NULL;
    for (size_t i = 0; c && i < c->count; i++) {
        if (strcmp(c->entry[i].section, section) == 0 && strcmp(c->entry[i].key, key) == 0)
            found = &c->entry[i]; /* the last one wins */
    }
    return found;
}

const char *cfg_get(const struct cfg *c, const char *section, const char *key)
{
    char name[512];
    env_name(section, key, name, sizeof(name));
    const char *env = getenv(name);
    if (env)
        return env;
    const struct cfg_entry *e = find(c, section, key);
    return e ? e->value : NULL;
}

static void where(const struct cfg *c, const char *section, const char *key, char *out,
                  size_t size)
{
    char name[512];
    env_name(section, key, name, sizeof(name));
    const struct cfg_entry *e = find(c, section, key);
    if (getenv(name))
        snprintf(out, size, "environment variable %s", name);
    else if (e)
        snprintf(out, size, "%s:%d: [%s] %s", c->path, e->line, section, key);
    else
        snprintf(out, size, "[%s] %s", section, key);
}

int cfg_get_int(const struct cfg *c, const char *section, const char *key, long min, long max,
                long *out, struct tr_error *err)
{
    const char *v = cfg_get(c, section, key);
    if (!v)
        return 1;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *trim(end) || n < min || n > max) {
        char at[sizeof(c->path) + 600];
        where(c, section, key, at, sizeof(at));
        return tr_error_set(err, TR_EINVAL, "%s: \"%s\" is not a number from %ld to %ld", at, v,
                            min, max);
    }
    *out = n;
    return 0;
}

int cfg_get_bool(const struct cfg *c, const char *section, const char *key, bool *out,
                 struct tr_error *err)
{
    const char *v = cfg_get(c, section, key);
    if (!v)
        return 1;
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1")) {
        *out = true;
        return 0;
    }
    if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0")) {
        *out = false;
        return 0;
    }
    char at[sizeof(c->path) + 600];
    where(c, section, key, at, sizeof(at));
    return tr_error_set(err, TR_EINVAL, "%s: \"%s\" is not true or false", at, v);
}

int cfg_each_section(const struct cfg *c, const char *prefix,
                     int (*fn)(void *ctx, const char *name), void *ctx)
{
    size_t plen = strlen(prefix);
    for (size_t i = 0; c && i < c->count; i++) {
        const char *s = c->entry[i].section;
        if (strncmp(s, prefix, plen) != 0 || s[plen] != ' ')
            continue;
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(c->entry[k].section, s) == 0;
        if (seen)
            continue;
        int rc = fn(ctx, s + plen + 1);
        if (rc)
            return rc;
    }
    return 0;
}

int cfg_check_keys(const struct cfg *c, const char *const *known, struct tr_error *err)
{
    for (size_t i = 0; c && i < c->count; i++) {
        const struct cfg_entry *e = &c->entry[i];
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++) {
            const char *dot = strrchr(*k, '.');
            if (!dot || strcmp(dot + 1, e->key) != 0)
                continue;
            size_t slen = (size_t)(dot - *k);
            if (slen >= 2 && (*k)[slen - 1] == '*') {
                /* "site *": any named section of that kind */
                ok = strncmp(e->section, *k, slen - 1) == 0 && e->section[slen - 1] &&
                     strchr(e->section, ' ');
            } else {
                ok = strlen(e->section) == slen && strncmp(e->section, *k, slen) == 0;
            }
        }
        if (!ok)
            return tr_error_set(err, TR_EINVAL, "%s:%d: unknown setting \"%s\" in [%s]", c->path,
                                e->line, e->key, e->section);
    }
    return 0;
}
