"""The review console (Streamlit)."""
