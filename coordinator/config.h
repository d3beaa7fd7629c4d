/*
 * Configuration: the INI file of docs/design.md section 4, parsed with inih and validated as a
 * whole.
 *
 * Every error names the file, the line and the key ("xacoord.ini:12: [participant.payment]
 * pool_size: must be 1..1024"). Unknown sections and keys are errors. Secrets are read from files
 * named in the configuration (api_token_file, password_file); such a file must not be readable or
 * writable by group or others. Secrets are never printed, not even by config_dump.
 */
#ifndef XA_CONFIG_H
#define XA_CONFIG_H

#include "compiler.h"

#include "participant.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_PARTICIPANTS 32

typedef struct config_participant {
    char name[33];  /* [a-z0-9_]{1,32} */
    char *driver;   /* "postgres" | "mysql" | "memory" */
    char *conninfo; /* postgres; must not contain password= (use password_file) */
    char *host;     /* mysql: numeric IPv4/IPv6 address */
    int port;       /* mysql: default 3306 */
    char *database; /* mysql */
    char *user;     /* mysql */
    char *password_file;
    char *password; /* read from password_file (trailing newline removed) */
    char *ssl_ca;   /* mysql TLS: CA file; setting it turns TLS on */
    char *ssl_cert;
    char *ssl_key;
    bool ssl_verify_server_cert; /* mysql; default true when ssl_ca is set */
    int pool_size;               /* default 8, 1..1024 */
    uint32_t connect_timeout_ms; /* default 3000 */
    uint32_t lock_timeout_ms;    /* default: half of the coordinator's default_timeout_ms */
    bool allow_unsafe; /* use it even when preflight finds it unsafe (preflight.h); default false */
    px_target target;  /* filled from the fields above; points into them */
} config_participant;

/* Where commit decisions are kept (docs/design.md section 3, "Decision store"). */
typedef enum decision_log {
    DECISION_LOG_JOURNAL = 0, /* the local journal in data_dir (default) */
    DECISION_LOG_POSTGRES,    /* rows in a PostgreSQL store shared by every coordinator */
} decision_log;

/* [decision_store]: the PostgreSQL database that holds xacoord_decisions and xacoord_nodes. */
typedef struct config_store {
    char *conninfo; /* libpq conninfo; must not contain password= (use password_file) */
    char *password_file;
    char *password;              /* read from password_file */
    int pool_size;               /* default 4, 1..1024 */
    uint32_t lease_ms;           /* how long a node's lease lasts after a renew; default 10000 */
    uint32_t renew_ms;           /* how often the holder renews it; default lease_ms / 4 */
    uint32_t connect_timeout_ms; /* default 3000 */
    /* The postgres participant whose database holds the store (conninfo names that same
     * database): its branch commits last, in one phase, with the decision row inside it. */
    char *participant;
    int participant_index; /* -1: none */
    px_target target;      /* filled from the fields above; points into them */
} config_store;

typedef struct config {
    char *path;
    /* Not a key: set from the command line (--accept-damaged-tail) for one start after an
     * operator resolved a damaged journal's last decision by hand (journal.h). */
    bool accept_damaged_tail;
    char node_id[17];     /* [a-z0-9]{1,16} */
    char listen_host[64]; /* numeric address; default 127.0.0.1 */
    int listen_port;      /* default 7070 */
    char *data_dir;       /* required */
    char *api_token_file;
    char *api_token;                 /* read from api_token_file */
    int max_inflight;                /* default 256 */
    uint32_t default_timeout_ms;     /* default 5000 */
    uint32_t max_timeout_ms;         /* largest timeout_ms a request may ask for; default 60000 */
    uint32_t commit_wait_ms;         /* default 2000 */
    uint32_t drain_limit_ms;         /* default 30000 */
    uint32_t recovery_interval_ms;   /* default 10000 */
    int64_t outcome_retention_s;     /* default 86400 */
    size_t max_body_bytes;           /* default 1 MiB */
    int http_max_connections;        /* default 1024 (http.h: the oldest idle one makes room) */
    size_t http_max_buffered_bytes;  /* request bodies of all connections; default 64 MiB */
    uint32_t http_header_timeout_ms; /* first byte to last header of a request; default 10000 */
    uint32_t http_body_timeout_ms;   /* last header to last body byte; default 30000 */
    uint32_t http_idle_timeout_ms;   /* keep-alive connection without a request; default 60000 */
    size_t journal_segment_bytes;    /* rotate and compact the journal past this; default 64 MiB */
    int max_branches;                /* default 16 */
    int max_statements;              /* per branch; default 64 */
    char log_level[8];               /* debug | info | warn | error; default info */
    char log_format[8];              /* text | json; default text */
    decision_log decision_log;       /* journal (default) | postgres */
    bool has_store;                  /* a [decision_store] section was given */
    config_store store;
    int nparticipants;
    config_participant participants[CONFIG_MAX_PARTICIPANTS];
} config;

/* Loads and validates path. Returns 0, or -EINVAL (-ENOMEM) with a message naming file, line
 * and key in err. On failure *cfg holds nothing that needs freeing. Each participant's target
 * points into *cfg (target.name into the participant itself): keep cfg at its address while targets
 * are in use. */
XA_MUST_CHECK int config_load(const char *path, config *cfg, char *err, size_t errlen);
void config_free(config *cfg);

/* Finds a participant by name; NULL when there is none. */
const config_participant *config_find_participant(const config *cfg, const char *name);

/* Prints the effective configuration (secrets masked) - for --check-config. */
void config_dump(const config *cfg, FILE *out);

#endif
