"""Scale-out backends. Nothing here is imported unless asked for (`measure --backend ray`)."""
