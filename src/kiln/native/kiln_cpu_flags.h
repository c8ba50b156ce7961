/* Which kernel library an x86_64 CPU can run: shared by kiln_runtime.c (TVM runtime) and
 * kiln_standalone_runtime.c, so both bundles pick the portable twin the same way. */
#ifndef KILN_CPU_FLAGS_H
#define KILN_CPU_FLAGS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The flags of ``requires`` (signature.txt's "requires" line, space-separated) that
 * /proc/cpuinfo does not list, as " flag1 flag2" in ``missing`` (empty: none missing, no
 * requirement, or no /proc/cpuinfo to read). */
static void kiln_missing_cpu_flags(const char* requires, char* missing, size_t size) {
  char flags[8192] = " ", line[8192];
  missing[0] = '\0';
  FILE* f = requires ? fopen("/proc/cpuinfo", "r") : NULL;
  if (!f) return;
  while (fgets(line, sizeof(line), f)) {
    char* colon = strchr(line, ':');
    if (strncmp(line, "flags", 5) == 0 && colon) {
      snprintf(flags, sizeof(flags), " %.*s ", (int)strcspn(colon + 1, "\r\n"), colon + 1);
      break;
    }
  }
  fclose(f);
  char req[1024], *save = NULL;
  snprintf(req, sizeof(req), "%s", requires);
  for (char* tok = strtok_r(req, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    char needle[128];
    snprintf(needle, sizeof(needle), " %s ", tok);
    if (!strstr(flags, needle)) {
      strncat(missing, " ", size - strlen(missing) - 1);
      strncat(missing, tok, size - strlen(missing) - 1);
    }
  }
}

/* KILN_FORCE_FALLBACK=1: the portable twin whenever the artifact has one (testing, or a CPU
 * whose /proc/cpuinfo overstates what it can run). */
static int kiln_force_fallback(void) {
  const char* force = getenv("KILN_FORCE_FALLBACK");
  return force && force[0] && strcmp(force, "0") != 0;
}

#endif
