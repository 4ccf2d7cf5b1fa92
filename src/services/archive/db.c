/*
 * db.c - the SQL interface of db.h over SQLite (sqlite3) and PostgreSQL (libpq).
 */
#include "common.h"
#include "db.h"

#include <pthread.h>

#include <inttypes.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

#define MAX_PARAMS 64

struct db_stmt {
    struct db *db;
    char *sql;               /* as given (cache key) */
    struct db_stmt *next;
    /* SQLite */
    sqlite3_stmt *sq;
    int param_index[MAX_PARAMS + 1]; /* $n -> SQLite parameter index */
    /* PostgreSQL */
    char name[16];           /* a prepared statement's; "" for a one-shot one */
    char *text;              /* a one-shot statement's SQL, run with PQexecParams */
    int nparams;
    char *values[MAX_PARAMS];
    bool executed;
    PGresult *res;
    int row, rows;
    int64_t changes;
};

struct db {
    enum db_engine engine;
    sqlite3 *sq;
    PGconn *pg;
    struct db_stmt *stmts;
    unsigned next_name;
};

enum db_engine db_engine(const struct db *db)
{
    return db->engine;
}

/* Replace the dialect words. */
static char *translate(const struct db *db, const char *sql)
{
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    const char *p = sql;
    while (*p) {
        if (strncmp(p, "{SERIAL}", 8) == 0) {
            tr_buf_adds(&b, db->engine == DB_SQLITE ? "INTEGER PRIMARY KEY" : "BIGSERIAL PRIMARY KEY");
            p += 8;
        } else if (strncmp(p, "{BIGINT}", 8) == 0) {
            tr_buf_adds(&b, db->engine == DB_SQLITE ? "INTEGER" : "BIGINT");
            p += 8;
        } else if (strncmp(p, "{PATTERN_OPS}", 13) == 0) {
            /* An index that serves LIKE 'prefix%' whatever the database's collation. */
            tr_buf_adds(&b, db->engine == DB_SQLITE ? "" : " text_pattern_ops");
            p += 13;
        } else if (strncmp(p, "{NOIDX}", 7) == 0) {
            /* SQLite's unary + : the next term must not choose the index (PostgreSQL's
             * planner has statistics and needs no hint). */
            tr_buf_adds(&b, db->engine == DB_SQLITE ? "+" : "");
            p += 7;
        } else if (strncmp(p, "{STRPOS}", 8) == 0) {
            tr_buf_adds(&b, db->engine == DB_SQLITE ? "instr" : "strpos");
            p += 8;
        } else if (strncmp(p, "{FOR_UPDATE}", 12) == 0) {
            tr_buf_adds(&b, db->engine == DB_SQLITE ? "" : "FOR UPDATE");
            p += 12;
        } else {
            tr_buf_addc(&b, *p++);
        }
    }
    return tr_buf_detach(&b, NULL);
}

/* ---- node identity ------------------------------------------------------------------------ */

static char node_id[128];
static pthread_once_t node_once = PTHREAD_ONCE_INIT;

static void node_id_init(void)
{
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "localhost");
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint32_t)time(NULL) ^ (uint32_t)getpid() << 16;
    snprintf(node_id, sizeof(node_id), "%s:%ld:%08" PRIx32, host, (long)getpid(), r);
}

const char *db_node_id(void)
{
    pthread_once(&node_once, node_id_init);
    return node_id;
}

/* ---- open / close ------------------------------------------------------------------------- */

static int open_sqlite(const char *path, struct db *db, struct tr_error *err)
{
    int rc = sqlite3_open_v2(path, &db->sq,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        tr_error_set(err, TR_EIO, "cannot open the index %s: %s", path,
                     db->sq ? sqlite3_errmsg(db->sq) : sqlite3_errstr(rc));
        return TR_EIO;
    }
    sqlite3_busy_timeout(db->sq, 30000);
    /* WAL: readers never block the writer; synchronous=FULL: a commit is on disk when it
     * returns (DESIGN.md invariant 1). LIKE case-sensitive, as in PostgreSQL. mmap_size: the
     * database file is read through a mapping (up to SQLite's 2 GB limit), so that the pages
     * a pooled connection must read again after any other connection's commit (every
     * C-STORE, every audit entry) cost no system call each (docs/decisions.md). */
    return db_exec(db,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; "
                   "PRAGMA case_sensitive_like=ON; PRAGMA temp_store=MEMORY; "
                   "PRAGMA mmap_size=2147418112",
                   err);
}

static int open_postgres(const char *url, struct db *db, struct tr_error *err)
{
    db->pg = PQconnectdb(url);
    if (!db->pg || PQstatus(db->pg) != CONNECTION_OK) {
        /* The URL may hold a password: name only the problem. */
        return tr_error_set(err, TR_EIO, "cannot connect to PostgreSQL: %s",
                            db->pg ? PQerrorMessage(db->pg) : "out of memory");
    }
    PGresult *r = PQexec(db->pg, "SET client_min_messages = warning; SET synchronous_commit = on");
    PQclear(r);
    return 0;
}

int db_open(const char *url, struct db **out, struct tr_error *err)
{
    struct db *db = tr_calloc(1, sizeof(*db));
    if (!db)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc;
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
        db->engine = DB_POSTGRES;
        rc = open_postgres(url, db, err);
    } else {
        db->engine = DB_SQLITE;
        rc = open_sqlite(strncmp(url, "sqlite:", 7) == 0 ? url + 7 : url, db, err);
    }
    if (rc) {
        db_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

static void stmt_free(struct db_stmt *st)
{
    if (st->sq)
        sqlite3_finalize(st->sq);
    if (st->res)
        PQclear(st->res);
    for (int i = 0; i < MAX_PARAMS; i++)
        tr_free(st->values[i]);
    tr_free(st->sql);
    tr_free(st->text);
    tr_free(st);
}

void db_close(struct db *db)
{
    if (!db)
        return;
    while (db->stmts) {
        struct db_stmt *n = db->stmts->next;
        stmt_free(db->stmts);
        db->stmts = n;
    }
    if (db->sq)
        sqlite3_close(db->sq);
    if (db->pg)
        PQfinish(db->pg);
    tr_free(db);
}

/* ---- plain execution ---------------------------------------------------------------------- */

int db_exec(struct db *db, const char *sql, struct tr_error *err)
{
    char *text = translate(db, sql);
    if (!text)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc = 0;
    if (db->engine == DB_SQLITE) {
        char *msg = NULL;
        if (sqlite3_exec(db->sq, text, NULL, NULL, &msg) != SQLITE_OK) {
            rc = tr_error_set(err, TR_EIO, "index: %s", msg ? msg : sqlite3_errmsg(db->sq));
            sqlite3_free(msg);
        }
    } else {
        PGresult *r = PQexec(db->pg, text);
        ExecStatusType s = PQresultStatus(r);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
            rc = tr_error_set(err, TR_EIO, "index: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
    tr_free(text);
    return rc;
}

/* ---- prepared statements ------------------------------------------------------------------ */

static int count_params(const char *sql)
{
    int max = 0;
    for (const char *p = sql; *p; p++) {
        if (*p == '$' && p[1] >= '1' && p[1] <= '9') {
            int n = (int)strtol(p + 1, NULL, 10);
            if (n > max)
                max = n;
        }
    }
    return max;
}

static int prepare(struct db *db, const char *sql, bool cached, struct db_stmt **out,
                   struct tr_error *err);

int db_prepare(struct db *db, const char *sql, struct db_stmt **out, struct tr_error *err)
{
    for (struct db_stmt *st = db->stmts; st; st = st->next) {
        if (strcmp(st->sql, sql) == 0) {
            db_reset(st);
            *out = st;
            return 0;
        }
    }
    return prepare(db, sql, true, out, err);
}

int db_prepare_temp(struct db *db, const char *sql, struct db_stmt **out, struct tr_error *err)
{
    return prepare(db, sql, false, out, err);
}

void db_finalize(struct db_stmt *st)
{
    if (!st)
        return;
    if (st->db->engine == DB_POSTGRES && st->name[0]) {
        char sql[48];
        snprintf(sql, sizeof(sql), "DEALLOCATE %s", st->name);
        PGresult *r = PQexec(st->db->pg, sql);
        PQclear(r);
    }
    stmt_free(st);
}

static int prepare(struct db *db, const char *sql, bool cached, struct db_stmt **out,
                   struct tr_error *err)
{
    struct db_stmt *st = tr_calloc(1, sizeof(*st));
    char *text = translate(db, sql);
    if (!st || !text || !(st->sql = tr_strdup(sql))) {
        tr_free(text);
        tr_free(st);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    st->db = db;
    st->nparams = count_params(text);
    int rc = 0;
    if (st->nparams > MAX_PARAMS) {
        rc = tr_error_set(err, TR_ELIMIT, "too many parameters");
    } else if (db->engine == DB_SQLITE) {
        if (sqlite3_prepare_v2(db->sq, text, -1, &st->sq, NULL) != SQLITE_OK) {
            rc = tr_error_set(err, TR_EIO, "index: %s in: %.200s", sqlite3_errmsg(db->sq), text);
        } else {
            for (int i = 1; i <= st->nparams; i++) {
                char name[16];
                snprintf(name, sizeof(name), "$%d", i);
                st->param_index[i] = sqlite3_bind_parameter_index(st->sq, name);
            }
        }
    } else if (!cached) {
        /* One-shot (a query built for its keys): one round trip with PQexecParams at the
         * first step, instead of prepare, execute and DEALLOCATE (three). */
        st->text = text;
        text = NULL;
    } else {
        snprintf(st->name, sizeof(st->name), "s%u", ++db->next_name);
        PGresult *r = PQprepare(db->pg, st->name, text, st->nparams, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = tr_error_set(err, TR_EIO, "index: %s in: %.200s", PQresultErrorMessage(r), text);
        PQclear(r);
    }
    tr_free(text);
    if (rc) {
        stmt_free(st);
        return rc;
    }
    if (cached) {
        st->next = db->stmts;
        db->stmts = st;
    }
    *out = st;
    return 0;
}

static int set_value(struct db_stmt *st, int index, const char *value)
{
    if (index < 1 || index > st->nparams)
        return TR_EINVAL;
    tr_free(st->values[index - 1]);
    st->values[index - 1] = NULL;
    if (value && !(st->values[index - 1] = tr_strdup(value)))
        return TR_ENOMEM;
    return 0;
}

int db_bind_text(struct db_stmt *st, int index, const char *value)
{
    if (st->sq) {
        if (index < 1 || index > st->nparams || !st->param_index[index])
            return TR_EINVAL;
        int rc = value ? sqlite3_bind_text(st->sq, st->param_index[index], value, -1,
                                           SQLITE_TRANSIENT)
                       : sqlite3_bind_null(st->sq, st->param_index[index]);
        return rc == SQLITE_OK ? 0 : TR_EIO;
    }
    return set_value(st, index, value);
}

int db_bind_int64(struct db_stmt *st, int index, int64_t value)
{
    if (st->sq) {
        if (index < 1 || index > st->nparams || !st->param_index[index])
            return TR_EINVAL;
        return sqlite3_bind_int64(st->sq, st->param_index[index], value) == SQLITE_OK ? 0 : TR_EIO;
    }
    char text[24];
    snprintf(text, sizeof(text), "%" PRId64, value);
    return set_value(st, index, text);
}

int db_bind_null(struct db_stmt *st, int index)
{
    return db_bind_text(st, index, NULL);
}

int db_step(struct db_stmt *st, struct tr_error *err)
{
    struct db *db = st->db;
    if (st->sq) {
        int rc = sqlite3_step(st->sq);
        if (rc == SQLITE_ROW)
            return 1;
        if (rc == SQLITE_DONE) {
            st->changes = sqlite3_changes(db->sq);
            return 0;
        }
        int code = rc == SQLITE_CONSTRAINT ? TR_EEXIST : rc == SQLITE_FULL ? TR_ELIMIT : TR_EIO;
        return tr_error_set(err, code, "index: %s", sqlite3_errmsg(db->sq));
    }
    if (!st->executed) {
        st->executed = true;
        st->res = st->text ? PQexecParams(db->pg, st->text, st->nparams, NULL,
                                          (const char *const *)st->values, NULL, NULL, 0)
                           : PQexecPrepared(db->pg, st->name, st->nparams,
                                            (const char *const *)st->values, NULL, NULL, 0);
        ExecStatusType s = PQresultStatus(st->res);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
            const char *state = PQresultErrorField(st->res, PG_DIAG_SQLSTATE);
            int code = state && strncmp(state, "23", 2) == 0   ? TR_EEXIST
                       : state && strcmp(state, "53100") == 0 ? TR_ELIMIT
                                                              : TR_EIO;
            return tr_error_set(err, code, "index: %s", PQresultErrorMessage(st->res));
        }
        st->rows = PQntuples(st->res);
        st->row = -1;
        const char *n = PQcmdTuples(st->res);
        st->changes = n && *n ? strtoll(n, NULL, 10) : 0;
    }
    if (st->row + 1 < st->rows) {
        st->row++;
        return 1;
    }
    return 0;
}

bool db_column_is_null(struct db_stmt *st, int col)
{
    if (st->sq)
        return sqlite3_column_type(st->sq, col) == SQLITE_NULL;
    return PQgetisnull(st->res, st->row, col);
}

const char *db_column_text(struct db_stmt *st, int col)
{
    if (st->sq) {
        const unsigned char *t = sqlite3_column_text(st->sq, col);
        return t ? (const char *)t : "";
    }
    return PQgetvalue(st->res, st->row, col);
}

int64_t db_column_int64(struct db_stmt *st, int col)
{
    if (st->sq)
        return sqlite3_column_int64(st->sq, col);
    const char *v = PQgetvalue(st->res, st->row, col);
    return v && *v ? strtoll(v, NULL, 10) : 0;
}

int db_column_count(struct db_stmt *st)
{
    return st->sq ? sqlite3_column_count(st->sq) : PQnfields(st->res);
}

void db_reset(struct db_stmt *st)
{
    if (st->sq) {
        sqlite3_reset(st->sq);
        sqlite3_clear_bindings(st->sq);
        return;
    }
    if (st->res)
        PQclear(st->res);
    st->res = NULL;
    st->executed = false;
    st->rows = 0;
    st->row = -1;
    for (int i = 0; i < MAX_PARAMS; i++) {
        tr_free(st->values[i]);
        st->values[i] = NULL;
    }
}

int64_t db_changes(struct db_stmt *st)
{
    return st->changes;
}

/* ---- transactions ------------------------------------------------------------------------- */

int db_begin(struct db *db, struct tr_error *err)
{
    /* SQLite: take the write lock at once, so two writers queue on busy_timeout instead of
     * deadlocking on an upgrade. */
    return db_exec(db, db->engine == DB_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN", err);
}

int db_commit(struct db *db, struct tr_error *err)
{
    return db_exec(db, "COMMIT", err);
}

void db_rollback(struct db *db)
{
    db_exec(db, "ROLLBACK", NULL);
}

int db_like_escape(const char *text, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        if (n + 3 >= size)
            return TR_ELIMIT;
        if (*p == '%' || *p == '_' || *p == '!')
            out[n++] = '!';
        out[n++] = *p;
    }
    out[n] = '\0';
    return 0;
}

/* ---- migrations --------------------------------------------------------------------------- */

int db_schema_version(struct db *db, const char *component, int *version, struct tr_error *err)
{
    int rc = db_exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY "
                         "KEY, version INTEGER NOT NULL)",
                     err);
    if (rc)
        return rc;
    struct db_stmt *st;
    if ((rc = db_prepare(db, "SELECT version FROM schema_migrations WHERE component = $1", &st,
                         err)))
        return rc;
    db_bind_text(st, 1, component);
    rc = db_step(st, err);
    *version = rc == 1 ? (int)db_column_int64(st, 0) : 0;
    db_reset(st);
    return rc < 0 ? rc : 0;
}

int db_migrate(struct db *db, const char *component, const char *const *steps, size_t nsteps,
               struct tr_error *err)
{
    int rc = db_begin(db, err);
    if (rc)
        return rc;
    if (db->engine == DB_POSTGRES &&
        (rc = db_exec(db, "SELECT pg_advisory_xact_lock(7400265)", err)))
        goto fail;
    int version;
    if ((rc = db_schema_version(db, component, &version, err)))
        goto fail;
    if (version > (int)nsteps) {
        rc = tr_error_set(err, TR_EUNSUPPORTED,
                          "the database has %s schema version %d, newer than this telerad's (%zu)",
                          component, version, nsteps);
        goto fail;
    }
    for (int v = version; v < (int)nsteps; v++) {
        if ((rc = db_exec(db, steps[v], err))) {
            tr_error_prefix(err, "%s schema step %d", component, v + 1);
            goto fail;
        }
    }
    if (version < (int)nsteps) {
        struct db_stmt *st;
        if ((rc = db_prepare(db, "INSERT INTO schema_migrations (component, version) VALUES ($1, "
                                 "$2) ON CONFLICT (component) DO UPDATE SET version = $2",
                             &st, err)))
            goto fail;
        db_bind_text(st, 1, component);
        db_bind_int64(st, 2, (int64_t)nsteps);
        rc = db_step(st, err);
        db_reset(st);
        if (rc < 0)
            goto fail;
    }
    return db_commit(db, err);
fail:
    db_rollback(db);
    return rc;
}

/* ---- connection pool ---------------------------------------------------------------------- */

struct pool_conn {
    struct db *db;
    struct pool_conn *next;
};

struct db_pool {
    char *url;
    pthread_mutex_t lock;
    struct pool_conn *idle;
};

int db_pool_open(const char *url, struct db_pool **out, struct tr_error *err)
{
    struct db_pool *p = tr_calloc(1, sizeof(*p));
    if (!p || !(p->url = tr_strdup(url))) {
        tr_free(p);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&p->lock, NULL);
    /* One connection now, so that a wrong URL is an error at start. */
    struct db *db;
    int rc = db_open(url, &db, err);
    if (rc) {
        db_pool_close(p);
        return rc;
    }
    db_pool_release(p, db);
    *out = p;
    return 0;
}

void db_pool_close(struct db_pool *p)
{
    if (!p)
        return;
    while (p->idle) {
        struct pool_conn *c = p->idle;
        p->idle = c->next;
        db_close(c->db);
        tr_free(c);
    }
    pthread_mutex_destroy(&p->lock);
    tr_free(p->url);
    tr_free(p);
}

int db_pool_acquire(struct db_pool *p, struct db **out, struct tr_error *err)
{
    pthread_mutex_lock(&p->lock);
    struct pool_conn *c = p->idle;
    if (c)
        p->idle = c->next;
    pthread_mutex_unlock(&p->lock);
    if (c) {
        *out = c->db;
        tr_free(c);
        return 0;
    }
    return db_open(p->url, out, err);
}

void db_pool_release(struct db_pool *p, struct db *db)
{
    struct pool_conn *c = tr_malloc(sizeof(*c));
    if (!c) {
        db_close(db);
        return;
    }
    c->db = db;
    pthread_mutex_lock(&p->lock);
    c->next = p->idle;
    p->idle = c;
    pthread_mutex_unlock(&p->lock);
}

const char *db_pool_url(const struct db_pool *p)
{
    return p->url;
}
