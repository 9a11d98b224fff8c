//! `#[derive(Record)]` for Tempest's topology DSL.
//!
//! Use it through `tempest_dsl::Record`, which re-exports it; the generated code names items by
//! their `::tempest_dsl` paths. For a struct it generates:
//!
//! - `Record::FIELDS`, the fields in declaration order with their `FieldType`s, so that `build()`
//!   can check groupings and event-time fields by name;
//! - `hash_field` and `timestamp_field`, the accessors the runtime uses for fields groupings and
//!   event time;
//! - a `FieldKind` impl, so the struct can itself be a field of another record.
//!
//! A field whose type has no `FieldKind` impl takes `#[record(opaque)]`: it is carried but
//! cannot be grouped on or used as event time. An enum gets an empty field list (it can still
//! flow on a stream and be the fan-in type of a bolt).

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{Data, DeriveInput, Fields, parse_macro_input};

/// Derives `tempest_dsl::Record` (and `tempest_dsl::FieldKind` for structs).
#[proc_macro_derive(Record, attributes(record))]
pub fn derive_record(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

struct FieldInfo {
    name: String,
    access: TokenStream2,
    ty: syn::Type,
    opaque: bool,
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();

    let fields = match &input.data {
        Data::Struct(s) => collect_fields(&s.fields)?,
        Data::Enum(_) => {
            return Ok(quote! {
                impl #impl_generics ::tempest_dsl::Record for #name #ty_generics #where_clause {
                    const FIELDS: &'static [::tempest_dsl::Field] = &[];
                    fn hash_field(&self, _index: usize, _hasher: &mut ::tempest_dsl::KeyHasher) -> bool {
                        false
                    }
                    fn timestamp_field(&self, _index: usize) -> ::core::option::Option<i64> {
                        ::core::option::Option::None
                    }
                }
            });
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "Record cannot be derived for a union",
            ));
        }
    };

    let field_entries = fields.iter().map(|f| {
        let fname = &f.name;
        let ty = &f.ty;
        if f.opaque {
            quote! { ::tempest_dsl::Field::new(#fname, ::tempest_dsl::FieldType::Opaque) }
        } else {
            quote! { ::tempest_dsl::Field::new(#fname, <#ty as ::tempest_dsl::FieldKind>::TYPE) }
        }
    });

    let hash_arms = fields.iter().enumerate().map(|(i, f)| {
        let access = &f.access;
        if f.opaque {
            quote! { #i => false, }
        } else {
            quote! { #i => { ::tempest_dsl::FieldKind::stable_hash(&self.#access, hasher); true } }
        }
    });

    let ts_arms = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.opaque)
        .map(|(i, f)| {
            let access = &f.access;
            quote! { #i => ::tempest_dsl::FieldKind::as_timestamp_ms(&self.#access), }
        });

    let hash_all = fields.iter().filter(|f| !f.opaque).map(|f| {
        let access = &f.access;
        quote! { ::tempest_dsl::FieldKind::stable_hash(&self.#access, hasher); }
    });

    Ok(quote! {
        impl #impl_generics ::tempest_dsl::Record for #name #ty_generics #where_clause {
            const FIELDS: &'static [::tempest_dsl::Field] = &[ #(#field_entries),* ];

            #[allow(unreachable_patterns)]
            fn hash_field(&self, index: usize, hasher: &mut ::tempest_dsl::KeyHasher) -> bool {
                match index {
                    #(#hash_arms)*
                    _ => false,
                }
            }

            #[allow(unreachable_patterns)]
            fn timestamp_field(&self, index: usize) -> ::core::option::Option<i64> {
                match index {
                    #(#ts_arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }

        impl #impl_generics ::tempest_dsl::FieldKind for #name #ty_generics #where_clause {
            const TYPE: ::tempest_dsl::FieldType = ::tempest_dsl::FieldType::Record;

            #[allow(unused_variables)]
            fn stable_hash(&self, hasher: &mut ::tempest_dsl::KeyHasher) {
                #(#hash_all)*
            }
        }
    })
}

fn collect_fields(fields: &Fields) -> syn::Result<Vec<FieldInfo>> {
    let mut out = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let opaque = is_opaque(field)?;
        let (name, access) = match &field.ident {
            Some(ident) => (ident.to_string(), quote! { #ident }),
            None => {
                let index = syn::Index::from(i);
                (i.to_string(), quote! { #index })
            }
        };
        out.push(FieldInfo {
            name,
            access,
            ty: field.ty.clone(),
            opaque,
        });
    }
    Ok(out)
}

fn is_opaque(field: &syn::Field) -> syn::Result<bool> {
    let mut opaque = false;
    for attr in &field.attrs {
        if !attr.path().is_ident("record") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("opaque") {
                opaque = true;
                Ok(())
            } else {
                Err(meta.error("unknown record attribute; expected `opaque`"))
            }
        })?;
    }
    Ok(opaque)
}
