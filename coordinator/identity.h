/*
 * Who owns a prepared branch (docs/design.md section 3, "XIDs" and "Fencing"). A data directory
 * gets a random identity at its first start, kept in <data_dir>/identity, and every gtrid this
 * coordinator creates carries it: xa2.<node_id>.<identity>.<boot>.<seq>. Recovery resolves only
 * branches of its own identity, so a second data directory started with the same node_id - by
 * mistake, or to replace a lost one - never rolls back the first one's branches, whatever
 * happened to the ownership locks (owner.h).
 *
 * Before identities, branches were named xa1.<node_id>.<boot>.<seq>. A data directory of that
 * version gets an identity at its first start with this one and remembers its last boot before
 * the upgrade (legacy_boot): its journal's records of those boots keep their xa1 gtrids, and it
 * alone still resolves xa1 branches of its node (of boots <= legacy_boot).
 *
 * The one formatter and the one parser of gtrids live here.
 */
#ifndef XA_IDENTITY_H
#define XA_IDENTITY_H

#include "compiler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDENTITY_LEN 8
/* What a foreign xa1 branch (no identity) is listed and taken over as: not 8 characters long,
 * so never a real identity. */
#define IDENTITY_LEGACY "legacy"
#define GTRID_NODE_MAX 16

typedef struct dir_identity {
    char id[IDENTITY_LEN + 1]; /* [a-z2-7]{8}; "" while a journal from before identities replays */
    uint64_t legacy_boot;      /* boots <= this were named xa1 (0: none) */
} dir_identity;

typedef struct gtrid_parts {
    int version; /* 1: xa1 (decimal numbers), 2: xa2 (base 36) */
    char node[GTRID_NODE_MAX + 1];
    char identity[IDENTITY_LEN + 1]; /* "" in version 1 */
    uint64_t boot, seq;
} gtrid_parts;

/* Writes the gtrid of g into buf: 0, or -ERANGE when it does not fit (never with
 * PX_XID_PART_MAX + 1 bytes). */
XA_MUST_CHECK int gtrid_format(const gtrid_parts *g, char *buf, size_t len);
/* Parses a gtrid of either version: 0, or -EINVAL unless s is exactly what gtrid_format writes. */
XA_MUST_CHECK int gtrid_parse(const char *s, gtrid_parts *g);
/* The prefix shared by the gtrids of version version of node node ("xa2.<node>."), or with
 * identity not NULL (version 2) by those of that data directory ("xa2.<node>.<identity>."). */
void gtrid_prefix(int version, const char *node, const char *identity, char *buf, size_t len);
/* The identity a parsed gtrid names: IDENTITY_LEGACY for version 1. */
const char *gtrid_identity(const gtrid_parts *g);

/* The gtrid of transaction (boot, seq) of the data directory id of node node. */
void identity_gtrid(const dir_identity *id, const char *node, uint64_t boot, uint64_t seq,
                    char *buf, size_t len);
/* Whether branch g was made by the data directory id of node node (and so is its to resolve). */
bool identity_owns(const dir_identity *id, const char *node, const gtrid_parts *g);
/* [a-z2-7]{8}, or IDENTITY_LEGACY when legacy is true. */
bool identity_valid(const char *s, bool legacy);

/* Reads dir/identity. Returns 1 when read, 0 when there is none, or with a message in err the
 * open's negative errno when it cannot be read and -EINVAL when it is corrupt (start-up must
 * stop: the identity names every branch). */
XA_MUST_CHECK int identity_load(const char *dir, dir_identity *out, char *err, size_t errlen);
/* Makes a new random identity for dir and writes it durably (temporary file, fsync, rename, fsync
 * of dir); legacy_boot is the last boot of a journal written before identities (0: none).
 * Returns 0, or -EIO with a message in err. */
XA_MUST_CHECK int identity_create(const char *dir, uint64_t legacy_boot, dir_identity *out,
                                  char *err, size_t errlen);

#endif
