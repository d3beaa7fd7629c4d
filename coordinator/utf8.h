/*
 * UTF-8 well-formedness (RFC 3629): what may go into a JSON reply or a log line as it is.
 */
#ifndef XA_UTF8_H
#define XA_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* The length (1-4) of the well-formed character at p, which has n > 0 bytes left; 0 when it is
 * not one (a stray continuation byte, an overlong form, a surrogate, above U+10FFFF, cut off). */
size_t utf8_char_len(const unsigned char *p, size_t n);

/* Whether all len bytes at s are well-formed UTF-8. */
bool utf8_valid(const char *s, size_t len);

#endif
