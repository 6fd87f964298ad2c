/*
 * auth.c — bearer tokens of the admin API.
 *
 * Tokens come from the configuration (`--admin-token-file`, mq.admin{tokens})
 * and are hashed with SHA-256 as they are loaded; only the digests stay in
 * memory, and a request's token is hashed and compared in constant time.
 * They are not kept in the SQLite store: the configuration is their source
 * of truth (rotated by editing it and reloading), so no table or migration
 * is needed and nothing can drift between a file and a database.
 *
 * A token may belong to a tenant: the entry "<token> tenant=<tenant>" (a
 * line of the tokens file, a string of mq.admin{tokens}) gives requests
 * made with <token> that tenant's view of the registry (routes.c,
 * api_registry.c). A token is never blank-separated, so the rest of the
 * line after the first blank is its options.
 */
#include "admin_int.h"

#include "registry.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Splits "<token>[ tenant=<tenant>]": the token's length and *tenant (a
 * malloc'd copy, NULL for none). MQR_EINVAL for anything else. */
static int parse_entry(const char *s, size_t *toklen, char **tenant)
{
    *tenant = NULL;
    size_t n = strcspn(s, " \t");
    *toklen = n;
    if (!n) return MQR_EINVAL;
    const char *p = s + n;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p) return 0;
    static const char key[] = "tenant=";
    if (strncmp(p, key, sizeof key - 1) != 0) return MQR_EINVAL;
    p += sizeof key - 1;
    size_t tl = strcspn(p, " \t");
    const char *rest = p + tl;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest || !mqr__tenant_valid(p, tl)) return MQR_EINVAL;
    *tenant = strndup(p, tl);
    return *tenant ? 0 : MQR_ENOMEM;
}

static void free_tenants(char **t, size_t n)
{
    for (size_t i = 0; t && i < n; i++)
        free(t[i]);
    free(t);
}

int mqr__admin_auth_set(mqr_admin_t *a, const char *const *tokens, size_t n)
{
    unsigned char(*h)[32] = NULL;
    char **ten = NULL;
    if (n) {
        h = calloc(n, sizeof *h);
        ten = calloc(n, sizeof *ten);
        if (!h || !ten) {
            free(h);
            free(ten);
            return MQR_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            size_t tl = 0;
            int rc = tokens[i] ? parse_entry(tokens[i], &tl, &ten[i]) : MQR_EINVAL;
            if (rc < 0) {
                OPENSSL_cleanse(h, n * sizeof *h);
                free(h);
                free_tenants(ten, n);
                return rc;
            }
            SHA256((const unsigned char *)tokens[i], tl, h[i]);
        }
    }
    if (!n && (!a->loopback || a->require_token)) {
        free(h);
        return MQR_EINVAL;
    }
    mqr__admin_auth_free(a);
    a->tokens = h;
    a->token_tenants = ten;
    a->ntokens = n;
    return 0;
}

void mqr__admin_auth_free(mqr_admin_t *a)
{
    if (a->tokens) OPENSSL_cleanse(a->tokens, a->ntokens * sizeof *a->tokens);
    free(a->tokens);
    free_tenants(a->token_tenants, a->ntokens);
    a->tokens = NULL;
    a->token_tenants = NULL;
    a->ntokens = 0;
}

int mqr__admin_auth_check(const mqr_admin_t *a, const char *authorization, const char **tenant)
{
    *tenant = NULL;
    if (!a->ntokens) return 0;
    if (!authorization) return 1;
    static const char scheme[] = "Bearer ";
    if (strncasecmp(authorization, scheme, sizeof scheme - 1) != 0) return 1;
    const char *tok = authorization + sizeof scheme - 1;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
        len--;
    if (!len) return 1;
    unsigned char d[32];
    SHA256((const unsigned char *)tok, len, d);
    int ok = 0;
    size_t which = 0;
    for (size_t i = 0; i < a->ntokens; i++) { /* every one, equal time */
        int eq = CRYPTO_memcmp(d, a->tokens[i], sizeof d) == 0;
        which = eq && !ok ? i : which;
        ok |= eq;
    }
    if (!ok) return 2;
    *tenant = a->token_tenants[which];
    return 0;
}

int mqr_admin_tokens_read(const char *path, char ***tokens, size_t *ntokens, char **errmsg)
{
    *tokens = NULL;
    *ntokens = 0;
    if (errmsg) *errmsg = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        int err = errno;
        if (errmsg && asprintf(errmsg, "cannot read tokens from %s: %s", path, strerror(err)) < 0)
            *errmsg = NULL;
        return MQR_EINVAL;
    }
    char line[4096];
    char **v = NULL;
    size_t n = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        char *s = line, *end = line + strlen(line);
        while (*s == ' ' || *s == '\t')
            s++;
        while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
        if (!*s || *s == '#') continue;
        char **nv = realloc(v, (n + 1) * sizeof *nv);
        if (!nv || !(nv[n] = strdup(s))) {
            if (nv) v = nv;
            rc = MQR_ENOMEM;
            break;
        }
        v = nv;
        n++;
    }
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    if (rc == 0 && n == 0) {
        rc = MQR_EINVAL;
        if (errmsg && asprintf(errmsg, "no token in %s", path) < 0) *errmsg = NULL;
    }
    if (rc < 0) {
        mqr_admin_tokens_free(v, n);
        return rc;
    }
    *tokens = v;
    *ntokens = n;
    return 0;
}

void mqr_admin_tokens_free(char **tokens, size_t ntokens)
{
    for (size_t i = 0; i < ntokens; i++) {
        OPENSSL_cleanse(tokens[i], strlen(tokens[i]));
        free(tokens[i]);
    }
    free(tokens);
}
