/*
 * pdf.c - a report version as a PDF (A4), drawn with cairo's PDF surface: a heading with the
 * reading group and the status, the patient and the exam, the sections with word-wrapped
 * text, the critical result in a box, the addenda, and the electronic signature. Fonts come
 * from fontconfig (DejaVu Sans on Debian); cairo embeds subsets with their Unicode maps, so
 * the text can be searched and extracted (pdftotext).
 */
#include "common.h"
#include "reports_int.h"

#include <cairo-pdf.h>
#include <cairo.h>
#include <fontconfig/fontconfig.h>
#include <stdio.h>

#define PAGE_W    595.0 /* A4 in points */
#define PAGE_H    842.0
#define MARGIN    56.0
#define BODY_SIZE 10.5
#define LINE      14.0

struct page {
    cairo_t *cr;
    double y;
    int number;
    const struct rep_doc *d;
};

static cairo_status_t write_buf(void *ctx, const unsigned char *data, unsigned int len)
{
    return tr_buf_add(ctx, data, len) == 0 ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
}

static void font(cairo_t *cr, bool bold, double size)
{
    cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

static void footer(struct page *p)
{
    char text[256];
    snprintf(text, sizeof(text), "%s - accession %s - page %d", p->d->patient_id,
             *p->d->accession ? p->d->accession : "-", p->number);
    font(p->cr, false, 8);
    cairo_set_source_rgb(p->cr, 0.4, 0.4, 0.4);
    cairo_move_to(p->cr, MARGIN, PAGE_H - 30);
    cairo_show_text(p->cr, text);
    cairo_set_source_rgb(p->cr, 0, 0, 0);
}

static void new_page_if(struct page *p, double need)
{
    if (p->y + need <= PAGE_H - MARGIN)
        return;
    footer(p);
    cairo_show_page(p->cr);
    p->number++;
    p->y = MARGIN;
}

/* Width of bytes [from, to) of `s` in the current font; very long pieces count as too wide. */
static double width_of(cairo_t *cr, const char *s, size_t from, size_t to)
{
    char piece[2048];
    if (to - from >= sizeof(piece))
        return PAGE_W * 10;
    memcpy(piece, s + from, to - from);
    piece[to - from] = '\0';
    cairo_text_extents_t ext;
    cairo_text_extents(cr, piece, &ext);
    return ext.x_advance;
}

static void draw(struct page *p, const char *s, size_t from, size_t to, double x, bool bold,
                 double size)
{
    char piece[2048];
    size_t n = to - from < sizeof(piece) - 1 ? to - from : sizeof(piece) - 1;
    memcpy(piece, s + from, n);
    piece[n] = '\0';
    new_page_if(p, LINE);
    font(p->cr, bold, size);
    cairo_move_to(p->cr, x, p->y + size);
    cairo_show_text(p->cr, piece);
    p->y += LINE;
}

/* Draw `text` from x, wrapped at spaces to the right margin; a word wider than the line is cut
 * between characters. An empty line is half a line of space. */
static void paragraph(struct page *p, const char *text, double x, bool bold, double size)
{
    double max = PAGE_W - MARGIN - x;
    font(p->cr, bold, size);
    for (const char *line = text; line;) {
        size_t len = strcspn(line, "\n");
        bool blank = strspn(line, " \t\r") >= len;
        if (blank)
            p->y += LINE / 2;
        size_t pos = 0;
        while (!blank && pos < len) {
            size_t fit = pos;
            for (size_t end = pos; end < len;) {
                size_t next = end;
                while (next < len && line[next] == ' ')
                    next++;
                while (next < len && line[next] != ' ')
                    next++;
                font(p->cr, bold, size);
                if (width_of(p->cr, line, pos, next) > max)
                    break;
                fit = end = next;
            }
            if (fit == pos) {
                /* Not even one word fits: as many characters as fit, at least one. */
                fit = pos + 1;
                while (fit < len && ((unsigned char)line[fit] & 0xC0) == 0x80)
                    fit++;
                for (size_t k = fit; k < len;) {
                    size_t next = k + 1;
                    while (next < len && ((unsigned char)line[next] & 0xC0) == 0x80)
                        next++;
                    if (width_of(p->cr, line, pos, next) > max)
                        break;
                    fit = k = next;
                }
            }
            size_t end = fit;
            while (end > pos && (line[end - 1] == '\r' || line[end - 1] == ' '))
                end--;
            draw(p, line, pos, end, x, bold, size);
            pos = fit;
            while (pos < len && line[pos] == ' ')
                pos++;
        }
        line = line[len] ? line + len + 1 : NULL;
    }
}

static void heading(struct page *p, const char *text)
{
    new_page_if(p, 3 * LINE);
    p->y += 6;
    paragraph(p, text, MARGIN, true, 11.5);
    p->y += 2;
}

static void field(struct page *p, double x, const char *label, const char *value)
{
    font(p->cr, true, 9);
    cairo_move_to(p->cr, x, p->y + 9);
    cairo_show_text(p->cr, label);
    font(p->cr, false, 9);
    cairo_move_to(p->cr, x + 78, p->y + 9);
    cairo_show_text(p->cr, value && *value ? value : "-");
}

static void pn_display(const char *pn, char *out, size_t size)
{
    snprintf(out, size, "%s", pn);
    for (char *c = out; *c; c++) {
        if (*c == '^')
            *c = ' ';
    }
}

static void date_display(const char *da, char *out, size_t size)
{
    if (strlen(da) == 8)
        snprintf(out, size, "%.4s-%.2s-%.2s", da, da + 4, da + 6);
    else
        snprintf(out, size, "%s", da);
}

int rep_pdf_render(const struct rep_doc *d, struct tr_buf *out, struct tr_error *err)
{
    cairo_surface_t *s = cairo_pdf_surface_create_for_stream(write_buf, out, PAGE_W, PAGE_H);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(s);
        return tr_error_set(err, TR_ENOMEM, "cairo: cannot make a PDF surface");
    }
    char when[32], buf[512];
    rep_iso_time(d->signed_at, when);
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_TITLE, "Diagnostic imaging report");
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_AUTHOR, d->signer_name);
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_CREATOR, "telerad " TELERAD_VERSION);
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_CREATE_DATE, when);
    cairo_t *cr = cairo_create(s);
    struct page p = {cr, MARGIN, 1, d};

    /* Heading */
    font(cr, true, 16);
    cairo_move_to(cr, MARGIN, p.y + 16);
    cairo_show_text(cr, d->organization);
    const char *status = d->kind == REP_PRELIMINARY ? "PRELIMINARY REPORT"
                         : d->naddenda              ? "FINAL REPORT WITH ADDENDUM"
                                                    : "FINAL REPORT";
    font(cr, true, 11);
    cairo_text_extents_t ext;
    cairo_text_extents(cr, status, &ext);
    if (d->kind == REP_PRELIMINARY)
        cairo_set_source_rgb(cr, 0.75, 0.35, 0);
    cairo_move_to(cr, PAGE_W - MARGIN - ext.x_advance, p.y + 16);
    cairo_show_text(cr, status);
    cairo_set_source_rgb(cr, 0, 0, 0);
    p.y += 24;
    font(cr, false, 10);
    snprintf(buf, sizeof(buf), "Diagnostic imaging report for %s", d->site_name);
    cairo_move_to(cr, MARGIN, p.y + 10);
    cairo_show_text(cr, buf);
    p.y += 18;
    cairo_move_to(cr, MARGIN, p.y);
    cairo_line_to(cr, PAGE_W - MARGIN, p.y);
    cairo_set_line_width(cr, 0.8);
    cairo_stroke(cr);
    p.y += 8;

    /* Patient and exam */
    char name[256], birth[16], date[16];
    pn_display(d->patient_name, name, sizeof(name));
    date_display(d->birth_date, birth, sizeof(birth));
    date_display(d->study_date, date, sizeof(date));
    double col = MARGIN + 250;
    field(&p, MARGIN, "Patient", name);
    field(&p, col, "Accession", d->accession);
    p.y += 13;
    field(&p, MARGIN, "Patient ID", d->patient_id);
    field(&p, col, "Exam date", date);
    p.y += 13;
    snprintf(buf, sizeof(buf), "%s%s%s", birth, *d->sex ? "  sex " : "", d->sex);
    field(&p, MARGIN, "Born", buf);
    field(&p, col, "Modality", d->modality);
    p.y += 13;
    pn_display(d->referring, name, sizeof(name));
    field(&p, MARGIN, "Referred by", name);
    field(&p, col, "Priority", flow_priority_name(d->priority));
    p.y += 13;
    field(&p, MARGIN, "Exam", d->description);
    p.y += 20;

    for (int i = 0; i < REP_SECTION_COUNT; i++) {
        if (!d->sections[i] || !*d->sections[i])
            continue;
        heading(&p, rep_section_titles[i]);
        paragraph(&p, d->sections[i], MARGIN, false, BODY_SIZE);
    }
    if (d->critical_category) {
        snprintf(buf, sizeof(buf), "Critical result - ACR category %d", d->critical_category);
        new_page_if(&p, 4 * LINE);
        p.y += 8;
        double top = p.y;
        cairo_set_source_rgb(cr, 0.7, 0, 0);
        paragraph(&p, buf, MARGIN + 8, true, 11);
        if (d->critical_finding && *d->critical_finding)
            paragraph(&p, d->critical_finding, MARGIN + 8, false, BODY_SIZE);
        cairo_set_source_rgb(cr, 0.7, 0, 0);
        if (p.y > top) {
            cairo_rectangle(cr, MARGIN, top - 4, PAGE_W - 2 * MARGIN, p.y - top + 8);
            cairo_set_line_width(cr, 1.2);
            cairo_stroke(cr);
        }
        cairo_set_source_rgb(cr, 0, 0, 0);
        p.y += 8;
    }
    p.y += 10;
    rep_iso_time(d->kind == REP_ADDENDUM ? d->final_signed_at : d->signed_at, when);
    snprintf(buf, sizeof(buf), "%s report electronically signed by %s on %s",
             d->kind == REP_PRELIMINARY ? "Preliminary" : "Final", d->signer_name, when);
    paragraph(&p, buf, MARGIN, false, 9);
    for (unsigned a = 0; a < d->naddenda; a++) {
        snprintf(buf, sizeof(buf), "Addendum %u", a + 1);
        heading(&p, buf);
        paragraph(&p, d->addenda[a].text, MARGIN, false, BODY_SIZE);
        rep_iso_time(d->addenda[a].signed_at, when);
        snprintf(buf, sizeof(buf), "Addendum electronically signed by %s on %s",
                 d->addenda[a].signer_name, when);
        p.y += 4;
        paragraph(&p, buf, MARGIN, false, 9);
    }
    footer(&p);
    cairo_show_page(cr);
    cairo_status_t cs = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_finish(s);
    if (cs == CAIRO_STATUS_SUCCESS)
        cs = cairo_surface_status(s);
    cairo_surface_destroy(s);
    if (cs != CAIRO_STATUS_SUCCESS)
        return tr_error_set(err, cs == CAIRO_STATUS_WRITE_ERROR ? TR_ELIMIT : TR_EIO, "cairo: %s",
                            cairo_status_to_string(cs));
    return 0;
}

void rep_pdf_cleanup(void)
{
    cairo_debug_reset_static_data();
    FcFini();
}
