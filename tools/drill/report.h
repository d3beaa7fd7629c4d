/*
 * The drill's report: a table for people (the default), or JSON (--json) for programs.
 */
#ifndef XA_DRILL_REPORT_H
#define XA_DRILL_REPORT_H

#include "run.h"

#include <stdio.h>

void drill_report_table(const drill_result *r, FILE *out);
void drill_report_json(const drill_result *r, FILE *out);

#endif
