/*
 * db.h - one small SQL interface over SQLite (the embedded default) and PostgreSQL (libpq,
 * for scale-out), so that the index is written once.
 *
 * SQL is written with numbered parameters ($1, $2, ...), which both engines accept, and with
 * dialect words replaced before preparing: {SERIAL} (an auto-increment primary key column type),
 * {BIGINT}, {FOR_UPDATE} (row lock in PostgreSQL, nothing in SQLite, whose writers are
 * serialized), {PATTERN_OPS} (after an index column: text_pattern_ops in PostgreSQL, so that
 * LIKE 'prefix%' can use the index under any collation; nothing in SQLite), {STRPOS}
 * (instr / strpos) and {NOIDX} (before a column: SQLite's unary + that keeps the planner from
 * driving the query through that column's index; nothing in PostgreSQL). RETURNING and
 * ON CONFLICT work in both (SQLite >= 3.35).
 *
 * A `struct db` is one connection, used by one thread at a time.
 *
 * Exported names start with db_.
 */
#ifndef ARC_DB_H
#define ARC_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum db_engine { DB_SQLITE = 1, DB_POSTGRES = 2 };

struct db;
struct db_stmt;

/* url: "sqlite:PATH" (or a plain path) or "postgresql://user@host:port/db" / "postgres://...".
 * SQLite is opened in WAL mode with synchronous=FULL, foreign keys on, case-sensitive LIKE. */
int db_open(const char *url, struct db **out, struct tr_error *err);
void db_close(struct db *db);
enum db_engine db_engine(const struct db *db);

/* Run statements without parameters (several, separated by ';'). */
int db_exec(struct db *db, const char *sql, struct tr_error *err);

/* Prepared statements, cached by their SQL text: preparing the same text again returns the
 * same statement, reset. Statements belong to the connection (no finalize needed). */
int db_prepare(struct db *db, const char *sql, struct db_stmt **out, struct tr_error *err);
/* A statement that is not cached (dynamic SQL, e.g. a query built from an identifier): free it
 * with db_finalize. */
int db_prepare_temp(struct db *db, const char *sql, struct db_stmt **out, struct tr_error *err);
void db_finalize(struct db_stmt *st);
int db_bind_text(struct db_stmt *st, int index, const char *value); /* NULL binds NULL */
int db_bind_int64(struct db_stmt *st, int index, int64_t value);
int db_bind_null(struct db_stmt *st, int index);
/* Execute / fetch the next row: 1 a row is available, 0 done, negative error. */
int db_step(struct db_stmt *st, struct tr_error *err);
bool db_column_is_null(struct db_stmt *st, int col);
const char *db_column_text(struct db_stmt *st, int col); /* "" for NULL */
int64_t db_column_int64(struct db_stmt *st, int col);
int db_column_count(struct db_stmt *st);
/* Done with the rows (lets the statement be reused; frees PostgreSQL results). */
void db_reset(struct db_stmt *st);
/* Rows changed by the last INSERT/UPDATE/DELETE. */
int64_t db_changes(struct db_stmt *st);

int db_begin(struct db *db, struct tr_error *err);
int db_commit(struct db *db, struct tr_error *err);
void db_rollback(struct db *db);

/* Versioned schema migrations of one component ("archive", "flow", "security"): steps[i]
 * takes the schema from version i to i + 1 (statements separated by ';'). Runs the missing
 * steps in one transaction and records the version in table schema_migrations; a database
 * newer than the steps is TR_EUNSUPPORTED. Several processes starting at once on PostgreSQL
 * serialize on an advisory lock. */
int db_migrate(struct db *db, const char *component, const char *const *steps, size_t nsteps,
               struct tr_error *err);
/* The version a component's schema is at (0: none). */
int db_schema_version(struct db *db, const char *component, int *version, struct tr_error *err);

/* A pool of connections to one database, for a service used by many threads: acquire a
 * connection (an idle one, or a new one), use it in one thread, release it. */
struct db_pool;
int db_pool_open(const char *url, struct db_pool **out, struct tr_error *err);
void db_pool_close(struct db_pool *p);
int db_pool_acquire(struct db_pool *p, struct db **out, struct tr_error *err);
void db_pool_release(struct db_pool *p, struct db *db);
const char *db_pool_url(const struct db_pool *p);

/* This process among the nodes sharing one database: "HOST:PID:RANDOM" (RANDOM 8 hex digits,
 * so that a restarted process with a recycled pid is another node). Computed once; written
 * into the claimed_by columns of the rows a node leases, and logged at start (telerad serve).
 * Rows are leased per row with a guarded UPDATE (`... SET claimed_by = node, lease until T
 * WHERE id = $1 AND <unclaimed or lease expired>`, db_changes() == 1 means taken), which
 * works the same on both engines; see docs/decisions.md "Several nodes". */
const char *db_node_id(void);

/* Escape `text` for a LIKE pattern with ESCAPE '!' (both engines; '!' rather than '\\' so that
 * DICOM's backslash value separator stays literal). */
int db_like_escape(const char *text, char *out, size_t size);

#endif
