/*
 * guard.c — who may talk to the admin API at all, before any route runs.
 *
 * The admin server listens on loopback by default, often without tokens, and
 * any web page a browser on the same machine shows can send requests there.
 * So every request passes four checks (docs/security.md):
 *   - Host must name this server: its bound address, "localhost", or a name
 *     the operator configured. A DNS-rebinding page reaches 127.0.0.1 under
 *     its own name, which this refuses (421), reads included.
 *   - Origin, when a browser sends one, must be the server's own
 *     ("http://" + Host) or a configured one; anything else is 403, for
 *     every method.
 *   - A state-changing request without Origin whose Sec-Fetch-Site says a
 *     browser sent it from another site is 403.
 *   - A body must be application/json: a cross-site page can then only send
 *     it after a CORS preflight, which is answered only for a configured
 *     origin.
 * Refusals are counted by reason and logged at warning at most every 10 s.
 * Must not: look at tokens (routes.c does), or let a refused request reach
 * a handler.
 */
#include "admin_int.h"

#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const refuse_names[MQR_ADMIN_REFUSE_N] = {"host", "origin", "fetch_site",
                                                             "content_type"};

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static char *lower_dup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    d[n] = '\0';
    return d;
}

/* A DNS name (letters, digits, '-', '.') or an IP literal, IPv6 with or
 * without brackets; *len gets the name without brackets, *start its start. */
static bool host_name_ok(const char *s, const char **start, size_t *len)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    *start = s;
    *len = n;
    if (!n || n > 253) return false;
    char tmp[64];
    if (memchr(s, ':', n)) {
        if (n >= sizeof tmp) return false;
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        unsigned char a6[16];
        return inet_pton(AF_INET6, tmp, a6) == 1;
    }
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.') return false;
    return true;
}

/* "scheme://host[:port]" with scheme http or https, nothing after (a '/'
 * alone is dropped): the form of a browser's Origin header. *len: the
 * length to keep. */
static bool origin_ok(const char *s, size_t *len)
{
    size_t n = strlen(s);
    if (n && s[n - 1] == '/') n--;
    *len = n;
    if (!n || n >= MQR_ADMIN_MAX_ORIGIN) return false;
    size_t skip = strncasecmp(s, "http://", 7) == 0    ? 7
                  : strncasecmp(s, "https://", 8) == 0 ? 8
                                                       : 0;
    if (!skip || skip == n) return false;
    const char *h = s + skip, *end = s + n;
    if (*h == '[') { /* an IPv6 literal */
        const char *close = memchr(h, ']', (size_t)(end - h));
        if (!close) return false;
        h = close + 1;
    }
    for (; h < end && *h != ':'; h++)
        if (!isalnum((unsigned char)*h) && *h != '-' && *h != '.') return false;
    if (h < end) { /* a port: 1 to 5 digits */
        const char *p = h + 1;
        if (p == end || end - p > 5) return false;
        for (; p < end; p++)
            if (!isdigit((unsigned char)*p)) return false;
    }
    return true;
}

/* Copies n entries checked by ok into a lower-case list; -1 with *bad at
 * the first that fails. */
static int copy_list(const char *const *in, size_t n, bool is_origin, char ***out, size_t *bad)
{
    *out = NULL;
    if (!n) return 0;
    char **v = calloc(n, sizeof *v);
    if (!v) return MQR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *start = in[i];
        size_t len = 0;
        bool good =
            in[i] && (is_origin ? origin_ok(in[i], &len) : host_name_ok(in[i], &start, &len));
        if (!good) {
            free_list(v, n);
            *bad = i;
            return MQR_EINVAL;
        }
        if (!(v[i] = lower_dup(start, len))) {
            free_list(v, n);
            return MQR_ENOMEM;
        }
    }
    *out = v;
    return 0;
}

int mqr__admin_access_set(mqr_admin_t *a, const char *const *hosts, size_t nhosts,
                          const char *const *origins, size_t norigins, char **errmsg)
{
    char **h = NULL, **o = NULL;
    size_t bad = 0;
    int rc = copy_list(hosts, nhosts, false, &h, &bad);
    if (rc == MQR_EINVAL)
        mqr__errmsg(errmsg, "admin host name '%s' is neither a DNS name nor an IP address",
                    hosts[bad] ? hosts[bad] : "(null)");
    if (rc == 0) {
        rc = copy_list(origins, norigins, true, &o, &bad);
        if (rc == MQR_EINVAL)
            mqr__errmsg(errmsg, "admin origin '%s' is not scheme://host[:port] (http or https)",
                        origins[bad] ? origins[bad] : "(null)");
    }
    if (rc < 0) {
        free_list(h, nhosts);
        return rc;
    }
    mqr__admin_access_free(a);
    a->hosts = h;
    a->nhosts = h ? nhosts : 0;
    a->origins = o;
    a->norigins = o ? norigins : 0;
    return 0;
}

void mqr__admin_access_free(mqr_admin_t *a)
{
    free_list(a->hosts, a->nhosts);
    free_list(a->origins, a->norigins);
    a->hosts = a->origins = NULL;
    a->nhosts = a->norigins = 0;
}

/* ---- the checks ---- */

static bool in_list(char *const *v, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(v[i]) == len && strncasecmp(v[i], s, len) == 0) return true;
    return false;
}

/* Does the Host header's value name this server? Its port is not looked
 * at: a tunnel or proxy may put the server behind another one, and a
 * rebinding page is told apart by its name alone. */
static bool host_allowed(const mqr_admin_t *a, const char *host)
{
    const char *name = host;
    size_t len;
    if (host[0] == '[') {
        const char *close = strchr(host, ']');
        if (!close || (close[1] && close[1] != ':')) return false;
        name = host + 1;
        len = (size_t)(close - name);
    } else {
        const char *colon = strchr(host, ':');
        if (colon && strchr(colon + 1, ':')) return false; /* IPv6 needs brackets */
        len = colon ? (size_t)(colon - host) : strlen(host);
    }
    if (!len) return false;
    if (len == 9 && strncasecmp(name, "localhost", 9) == 0) return true;
    if (strlen(a->host) == len && strncasecmp(name, a->host, len) == 0) return true;
    if (in_list(a->hosts, a->nhosts, name, len)) return true;
    if (a->wildcard && len < 64) { /* any of our addresses may have been dialled */
        char tmp[64];
        unsigned char addr[16];
        memcpy(tmp, name, len);
        tmp[len] = '\0';
        return inet_pton(AF_INET, tmp, addr) == 1 || inet_pton(AF_INET6, tmp, addr) == 1;
    }
    return false;
}

/* Is origin the server's own, i.e. "http://" followed by the Host header? */
static bool same_origin(const char *origin, const char *host)
{
    return strncasecmp(origin, "http://", 7) == 0 && strcasecmp(origin + 7, host) == 0;
}

/* The media type of a Content-Type value, parameters and case aside. */
static bool is_json(const char *ct)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    static const char json[] = "application/json";
    if (strncasecmp(ct, json, sizeof json - 1) != 0) return false;
    const char *rest = ct + sizeof json - 1;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    return *rest == '\0' || *rest == ';';
}

static bool changes_state(int method)
{
    return method != HTTP_GET && method != HTTP_HEAD && method != HTTP_OPTIONS;
}

static bool refuse(mqr_admin_t *a, mqr_ares_t *res, mqr_admin_refuse_t why, int status,
                   const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static bool refuse(mqr_admin_t *a, mqr_ares_t *res, mqr_admin_refuse_t why, int status,
                   const char *code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    a->refused[why]++;
    uint64_t now = mqr__now_ms();
    if (!a->refuse_logged_ms || now - a->refuse_logged_ms >= 10000) {
        a->refuse_logged_ms = now;
        MQR_LOG_W(MQR_ADMIN_LOG, "refused a request (%s): %s", refuse_names[why], msg);
    }
    mqr__admin_error(res, status, code, "%s", msg);
    return false;
}

bool mqr__admin_guard(mqr_admin_t *a, const mqr_areq_t *req, mqr_ares_t *res)
{
    if (req->host_repeated) {
        mqr__admin_error(res, 400, "bad_request", "more than one Host or Origin header");
        return false;
    }
    if (!req->host) {
        if (req->http11) { /* RFC 9112 3.2: an HTTP/1.1 request without Host is 400 */
            mqr__admin_error(res, 400, "bad_request", "an HTTP/1.1 request needs a Host header");
            return false;
        }
    } else if (!host_allowed(a, req->host)) {
        return refuse(a, res, MQR_ADMIN_REFUSE_HOST, 421, "host_not_allowed",
                      "Host '%.100s' does not name this server (allowed: %s, localhost or a "
                      "name given with --admin-host)",
                      req->host, a->host);
    }
    if (req->origin) {
        if (in_list(a->origins, a->norigins, req->origin, strlen(req->origin))) {
            res->allow_origin = req->origin;
            res->preflight = req->method == HTTP_OPTIONS;
        } else if (!req->host || !same_origin(req->origin, req->host)) {
            return refuse(a, res, MQR_ADMIN_REFUSE_ORIGIN, 403, "origin_not_allowed",
                          "requests from the page at '%.100s' are not allowed (allow it with "
                          "--admin-origin)",
                          req->origin);
        }
    } else if (changes_state(req->method) && req->fetch_site &&
               strcasecmp(req->fetch_site, "same-origin") != 0 &&
               strcasecmp(req->fetch_site, "none") != 0) {
        return refuse(a, res, MQR_ADMIN_REFUSE_FETCH_SITE, 403, "cross_site",
                      "a %s sent by a browser from another site (Sec-Fetch-Site: %.40s)",
                      http_method_str(req->method), req->fetch_site);
    }
    if (req->has_body && (!req->content_type || !is_json(req->content_type)))
        return refuse(a, res, MQR_ADMIN_REFUSE_CONTENT_TYPE, 415, "unsupported_media_type",
                      "a request body must be Content-Type: application/json (got %.80s)",
                      req->content_type ? req->content_type : "none");
    return true;
}

const char *mqr__admin_refuse_name(mqr_admin_refuse_t why)
{
    return refuse_names[why];
}
