/*
 * index_int.h - private header of the index (index.c, query.c).
 */
#ifndef ARC_INDEX_INT_H
#define ARC_INDEX_INT_H

#include <pthread.h>

#include "db.h"
#include "index.h"

struct ix_conn {
    struct db *db;
    struct ix_conn *next;
};


struct arc_index {
    struct arc_index_options opt;
    char url[1024];
    /* readers: a pool of connections */
    pthread_mutex_t pool_lock;
    struct ix_conn *idle;
    /* the writer: one connection, one thread, a queue (group commit) */
    struct db *writer;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    struct arc_index_job *queue, *queue_tail;
    bool stopping;
    uint64_t batches;
};

int ix_acquire(struct arc_index *ix, struct db **out, struct tr_error *err);
void ix_release(struct arc_index *ix, struct db *db);
int64_t ix_now_ms(void);
void ix_upper(const char *in, char *out, size_t size);

#endif
