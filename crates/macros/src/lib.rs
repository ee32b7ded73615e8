//! `#[rask::op]`: a plain Rust function becomes a typed op of the cluster.
//!
//! ```ignore
//! #[rask::op]
//! fn hits(seed: u64, n: u64) -> u64 { /* … */ }
//!
//! let f = client.submit(hits, (7, 1_000_000))?; // a Future<u64>
//! assert_eq!(hits(7, 10), hits(7, 10));          // still a function
//! ```
//!
//! The function keeps its signature and body (under a hidden name); `hits` becomes a
//! constant of type `rask::typed::OpFn<…>` that dereferences to the function (so calls
//! still work) and carries the op's types, which `submit` checks at compile time. The op
//! registers itself where the program is linked. Arguments and the result are any serde
//! types; a function returning `Result<T, E>` yields `T`, and an `Err` fails the task with
//! `E`'s `Display`. Generic, `async` and method functions, and borrowed arguments, are
//! refused with a message saying why.
//!
//! This crate only generates code; the types it names live in `rask::typed` (another
//! path with `#[rask::op(crate = path)]`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::{
    parse_macro_input, spanned::Spanned, FnArg, GenericArgument, ItemFn, PathArguments, ReturnType,
    Type,
};

/// Turns a function into a typed op; see the crate docs.
#[proc_macro_attribute]
pub fn op(attr: TokenStream, item: TokenStream) -> TokenStream {
    let krate = match parse_crate(attr.into()) {
        Ok(k) => k,
        Err(e) => return e.to_compile_error().into(),
    };
    let f = parse_macro_input!(item as ItemFn);
    match expand(&krate, f) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// `crate = path` (default `::rask`).
fn parse_crate(attr: Tokens) -> syn::Result<syn::Path> {
    if attr.is_empty() {
        return Ok(syn::parse_quote!(::rask));
    }
    let nv: syn::MetaNameValue = syn::parse2(attr)?;
    if !nv.path.is_ident("crate") {
        return Err(syn::Error::new(nv.path.span(), "expected `crate = path`"));
    }
    match nv.value {
        syn::Expr::Path(p) => Ok(p.path),
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => s.parse(),
        other => Err(syn::Error::new(other.span(), "expected a path")),
    }
}

/// `Some((T, has_error))` when the return type is `Result<T, E>` or a one-argument
/// `Result<T>` alias: the op yields `T`.
fn result_ok(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

fn expand(krate: &syn::Path, f: ItemFn) -> syn::Result<Tokens> {
    let sig = &f.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(
            a.span(),
            "a typed op cannot be async: it runs on a worker's executor thread",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a typed op cannot be generic: each op has one name and one type",
        ));
    }
    let name = &sig.ident;
    let vis = &f.vis;
    let mut arg_tys = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a typed op is a free function, not a method",
                ))
            }
            FnArg::Typed(t) => {
                if let Type::Reference(r) = &*t.ty {
                    return Err(syn::Error::new(
                        r.span(),
                        "a typed op takes its arguments by value (they are decoded on the worker): use String for &str, Vec<T> for &[T]",
                    ));
                }
                arg_tys.push((*t.ty).clone());
            }
        }
    }
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let (out, fallible) = match result_ok(&ret) {
        Some(ok) => (ok, true),
        None => (ret.clone(), false),
    };
    let marker = format_ident!("__rask_op_{}", name);
    let implementation = format_ident!("__rask_fn_{}", name);
    let names: Vec<_> = (0..arg_tys.len())
        .map(|i| format_ident!("__a{}", i))
        .collect();
    let call = if fallible {
        quote! { #implementation(#(#names),*).map_err(|e| ::std::string::ToString::to_string(&e)) }
    } else {
        quote! { ::core::result::Result::Ok(#implementation(#(#names),*)) }
    };
    let (docs, other): (Vec<_>, Vec<_>) = f.attrs.iter().partition(|a| a.path().is_ident("doc"));
    let mut inner = f.clone();
    inner.sig.ident = implementation.clone();
    inner.attrs = other.into_iter().cloned().collect();
    inner.vis = syn::Visibility::Inherited;
    let span = Span::call_site();
    let op_doc = format!(
        "The typed op `{name}`: call it like the function, or pass it to `submit` and `map`."
    );
    Ok(quote::quote_spanned! {span=>
        #(#docs)*
        #[doc = ""]
        #[doc = #op_doc]
        #[allow(non_upper_case_globals)]
        #vis const #name: #krate::typed::OpFn<#marker> = #krate::typed::OpFn::new();

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #marker;

        impl #krate::typed::Op for #marker {
            type Args = (#(#arg_tys,)*);
            type Output = #out;
            type Fn = fn(#(#arg_tys),*) -> #ret;
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name));
            fn func() -> &'static Self::Fn {
                static F: fn(#(#arg_tys),*) -> #ret = #implementation;
                &F
            }
            fn call(args: Self::Args) -> ::core::result::Result<Self::Output, ::std::string::String> {
                let (#(#names,)*) = args;
                #call
            }
        }

        #inner

        #krate::typed::inventory::submit! { #krate::typed::Registration::of::<#marker>() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(f: ItemFn) -> String {
        match expand(&syn::parse_quote!(::rask), f) {
            Ok(t) => panic!("expanded: {t}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn functions_that_cannot_be_ops_are_refused_saying_why() {
        let e = error_of(syn::parse_quote!(
            async fn f(x: u64) -> u64 {
                x
            }
        ));
        assert!(e.contains("cannot be async"), "{e}");
        let e = error_of(syn::parse_quote!(
            fn f<T>(x: T) -> T {
                x
            }
        ));
        assert!(e.contains("cannot be generic"), "{e}");
        let e = error_of(syn::parse_quote!(
            fn f(s: &str) -> usize {
                s.len()
            }
        ));
        assert!(
            e.contains("by value") && e.contains("String for &str"),
            "{e}"
        );
        let e = error_of(syn::parse_quote!(
            fn f(&self) -> u64 {
                1
            }
        ));
        assert!(e.contains("not a method"), "{e}");
    }

    #[test]
    fn an_op_takes_its_arguments_as_a_tuple_and_a_result_yields_its_ok_type() {
        let t = expand(
            &syn::parse_quote!(::rask),
            syn::parse_quote!(
                /// Docs.
                pub fn div(a: u64, b: u64) -> Result<u64, String> {
                    a.checked_div(b).ok_or_else(|| "by zero".to_string())
                }
            ),
        )
        .unwrap()
        .to_string();
        for want in [
            "pub const div : :: rask :: typed :: OpFn < __rask_op_div >",
            "type Args = (u64 , u64 ,)",
            "type Output = u64",
            "fn __rask_fn_div (a : u64 , b : u64) -> Result < u64 , String >",
            "map_err",
            "inventory :: submit !",
            "# [doc = r\" Docs.\"]",
        ] {
            assert!(t.contains(want), "{want:?} not in {t}");
        }
        let t = expand(
            &syn::parse_quote!(my::path),
            syn::parse_quote!(
                fn one(x: u8) -> u8 {
                    x
                }
            ),
        )
        .unwrap()
        .to_string();
        assert!(
            t.contains("type Args = (u8 ,)") && t.contains("type Output = u8"),
            "{t}"
        );
        assert!(t.contains("my :: path :: typed :: Op"), "{t}");
        assert!(!t.contains("map_err"), "{t}");
    }

    #[test]
    fn the_crate_path_is_an_option() {
        let p = parse_crate(Tokens::new()).unwrap();
        assert_eq!(quote!(#p).to_string(), ":: rask");
        let p = parse_crate(quote!(crate = my::facade)).unwrap();
        assert_eq!(quote!(#p).to_string(), "my :: facade");
        let p = parse_crate(quote!(crate = "other")).unwrap();
        assert_eq!(quote!(#p).to_string(), "other");
        assert!(parse_crate(quote!(krate = x)).is_err());
    }
}
