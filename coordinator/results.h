/*
 * The results of a branch's statements as JSON text, for the client's reply.
 *
 * Every value is carried exactly or the branch fails before PREPARE with a reason naming the
 * statement, row and column (docs/design.md section 4, "values in replies"):
 *   integers           JSON numbers while they fit in a signed 64-bit integer, else strings of
 *                      their exact digits (MySQL BIGINT UNSIGNED)
 *   binary floats      JSON numbers; NaN, Infinity, -Infinity as the strings "NaN", "Infinity",
 *                      "-Infinity" (JSON has no such numbers)
 *   exact decimals     strings of the database's exact text (a double would round them)
 *   binary values      strings holding the bytes in base64
 *   booleans, NULL     true/false, null
 *   text               strings; text that is not valid UTF-8 cannot travel in JSON: refused
 * A result that returns columns lists them in "columns"; its rows are objects keyed by column
 * name, or arrays in column order when two columns share a name (an object would lose one).
 */
#ifndef XA_RESULTS_H
#define XA_RESULTS_H

#include "compiler.h"

#include "participant.h"

#include <stddef.h>

/* [{"rows_affected":N,"columns":[..],"rows":[..]}, ...] for results[0..n-1], malloc'ed.
 * NULL when a value cannot be carried exactly (err says which and why) or out of memory
 * (err says so). *failed_stmt is the index of the statement at fault (0 for out of memory). */
XA_MUST_CHECK char *results_render(const px_result *results, int n, int *failed_stmt, char *err,
                                   size_t errlen);

#endif
