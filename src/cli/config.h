/*
 * config.h - telerad's configuration file: INI-style sections of "key = value" lines, with
 * environment overrides (TELERAD_<SECTION>_<KEY>, upper case, '-' and ' ' as '_'), and
 * command-line flags over both. Documented in docs/configuration.md.
 *
 *   [server]
 *   dicom_port = 11112
 *   [site tx-general]
 *   ae_titles = TXGEN, TXGEN2
 */
#ifndef TR_CONFIG_H
#define TR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct cfg_entry {
    char *section; /* "server", "site tx-general" */
    char *key;
    char *value;
    int line;
};

struct cfg {
    char path[4096];
    struct cfg_entry *entry;
    size_t count, cap;
};

/* Read a file (errors name the file and line). A missing file is an error. */
int cfg_load(struct cfg *c, const char *path, struct tr_error *err);
void cfg_release(struct cfg *c);

/* The value of section.key: the environment override if set, else the file's, else NULL. */
const char *cfg_get(const struct cfg *c, const char *section, const char *key);
/* Typed getters: return 0 and set *out when the key is present and valid, 1 when absent
 * (*out untouched), TR_EINVAL with a message naming file, line and key when invalid. */
int cfg_get_int(const struct cfg *c, const char *section, const char *key, long min, long max,
                long *out, struct tr_error *err);
int cfg_get_bool(const struct cfg *c, const char *section, const char *key, bool *out,
                 struct tr_error *err);

/* Iterate over the sections whose name starts with `prefix ` ("site", "move_destination"):
 * calls fn with the rest of the name ("tx-general"). */
int cfg_each_section(const struct cfg *c, const char *prefix,
                     int (*fn)(void *ctx, const char *name), void *ctx);

/* Keys the program does not know are errors (typos must not pass silently): `known` lists
 * "section.key" strings, with "site *.key" style wildcards for named sections. */
int cfg_check_keys(const struct cfg *c, const char *const *known, struct tr_error *err);

#endif
