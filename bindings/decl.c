/*
 * decl.c — declarations kept across hot reloads (see decl.h): the claim,
 * takeover and abandon rules shared by the things a script declares that
 * must outlive its Lua state. Must not: touch Lua, or free a declaration
 * itself (the owner's drop function does).
 */
#include "decl.h"

#include <string.h>

l_decl_t *mqr__decl_find(const l_decl_list_t *list, const char *name)
{
    for (l_decl_t *d = list->head; d; d = d->next)
        if (strcmp(d->name, name) == 0) return d;
    return NULL;
}

void mqr__decl_add(l_decl_list_t *list, l_decl_t *d, l_state_t *st)
{
    d->created_by = st;
    d->claimed_by = st;
    d->next = list->head;
    list->head = d;
}

void mqr__decl_unlink(l_decl_list_t *list, l_decl_t *d)
{
    for (l_decl_t **p = &list->head; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            d->next = NULL;
            return;
        }
    }
}

void mqr__decl_takeover(l_decl_list_t *list, l_state_t *st, mqr_decl_drop_fn drop)
{
    for (l_decl_t **p = &list->head; *p;) {
        l_decl_t *d = *p;
        d->created_by = NULL;
        if (d->claimed_by == st) {
            p = &d->next;
            continue;
        }
        *p = d->next;
        d->next = NULL;
        drop(d, MQR_DECL_UNCLAIMED);
    }
}

void mqr__decl_abandon(l_decl_list_t *list, l_state_t *st, l_state_t *cur, mqr_decl_drop_fn drop)
{
    for (l_decl_t **p = &list->head; *p;) {
        l_decl_t *d = *p;
        if (d->created_by == st) {
            *p = d->next;
            d->next = NULL;
            drop(d, MQR_DECL_ABANDONED);
            continue;
        }
        if (d->claimed_by == st) d->claimed_by = cur;
        p = &d->next;
    }
}

void mqr__decl_drop_all(l_decl_list_t *list, mqr_decl_drop_fn drop)
{
    while (list->head) {
        l_decl_t *d = list->head;
        list->head = d->next;
        d->next = NULL;
        drop(d, MQR_DECL_HOST_FREE);
    }
}
